"""Validations of a deployment (docs/rollout.md): named expressions over an execution's
inputs and outputs, such as `score <= 0.9`, evaluated with simpleeval, a small expression
language with no access to Python's builtins, attributes or imports (never `eval`).
Pure: parsing, and judging one execution."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from simpleeval import EvalWithCompoundTypes, InvalidExpression

from gristmill_platform.errors import BadRequest

MAX_VALIDATIONS = 50
MAX_EXPRESSION = 1000
# what an expression may call: no builtins beyond these
FUNCTIONS = {"abs": abs, "len": len, "min": min, "max": max, "round": round}


class InvalidValidation(BadRequest):
    name = "InvalidValidation"


def _evaluator(names: Mapping[str, Any]) -> EvalWithCompoundTypes:
    return EvalWithCompoundTypes(names=dict(names), functions=FUNCTIONS)


def parse_validations(body: Mapping[str, Any]) -> dict[str, str]:
    """{"<name>": "<expression>"}, each parsed now so a typo is a 400, not a silent
    failure on every call. An empty body removes them all."""
    if len(body) > MAX_VALIDATIONS:
        raise InvalidValidation(f"At most {MAX_VALIDATIONS} validations")
    checked: dict[str, str] = {}
    for name, expression in body.items():
        if not isinstance(expression, str) or not expression.strip():
            raise InvalidValidation(f"Validation {name!r} must be an expression")
        if len(expression) > MAX_EXPRESSION:
            raise InvalidValidation(f"Validation {name!r} is longer than {MAX_EXPRESSION}")
        try:
            _evaluator({}).parse(expression)
        except (SyntaxError, InvalidExpression) as exc:
            raise InvalidValidation(f"Validation {name!r} is not a valid expression: {exc}",
                                    additional_data={"validation": name}) from None
        checked[str(name)] = expression
    return checked


def failures(validations: Mapping[str, str], values: Mapping[str, Any]) -> list[str]:
    """The names of the validations these inputs and outputs violate: false, or not
    computable on them (a missing name, a type error)."""
    failed: list[str] = []
    evaluator = _evaluator(values)
    for name, expression in validations.items():
        try:
            ok = bool(evaluator.eval(expression))
        except Exception:  # any error of the expression on these values is a violation
            ok = False
        if not ok:
            failed.append(name)
    return failed


def io_values(inputs: Sequence[Mapping[str, Any]], outputs: Sequence[Mapping[str, Any]]
              ) -> dict[str, Any]:
    """The names an expression sees: each input's and output's value (an execution's
    records, executions/io.py); an output shadows an input of the same name."""
    values = {str(i["pipeline_input_name"]): i.get("value") for i in inputs}
    values.update({str(o["pipeline_output_name"]): o.get("value") for o in outputs})
    return values
