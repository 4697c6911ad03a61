"""Authoring multi-step pipelines in Python: ``from gristmill import step, pipeline``.

``@step`` marks a typed function as a step. Called outside a pipeline it is the plain
function (unit-testable). Called inside a ``@pipeline`` function, it runs nothing: it
records a node of the graph and returns a handle on the node's outputs, which later steps
take as inputs and the pipeline returns as its outputs.

The step runner finds the decorated function by its name and calls its entry point
(``__gristmill_entry__``): it returns the dict of outputs the runner expects, also for a
step with one output whose function returns the bare value.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

F = TypeVar("F", bound=Callable[..., Any])

DATA_TYPES = ("string", "number", "boolean", "json", "array", "file")
SINGLE_OUTPUT = "result"

_PYTHON_TYPES: dict[Any, str] = {str: "string", int: "number", float: "number",
                                 bool: "boolean", dict: "json", list: "array",
                                 tuple: "array"}


class AuthoringError(ValueError):
    """A step or pipeline definition that cannot become a graph; the message says why."""


def data_type_of(annotation: Any, where: str) -> str:
    """The Gristmill data type of a Python annotation."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return "json"
    if isinstance(annotation, str) and annotation in DATA_TYPES:
        return annotation
    origin = typing.get_origin(annotation) or annotation
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(options) == 1:
            return data_type_of(options[0], where)
        return "json"
    if origin in _PYTHON_TYPES:
        return _PYTHON_TYPES[origin]
    raise AuthoringError(f"{where}: cannot map the type {annotation!r} to a Gristmill data "
                         f"type; annotate with str, int, float, bool, dict or list, or "
                         f"declare it (one of {', '.join(DATA_TYPES)})")


@dataclass
class StepDefinition:
    function: Callable[..., Any]
    name: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    single_output: bool
    check: str | None = None  # the severity of a @check
    cache: bool = False

    @property
    def entry_name(self) -> str:
        """The function name the step is created with: the decorated function's."""
        return self.function.__name__

    @property
    def module_file(self) -> str:
        return inspect.getfile(self.function)


class Step:
    """A ``@step`` function: the plain function outside a pipeline, a node inside one."""

    def __init__(self, definition: StepDefinition) -> None:
        self.definition = definition
        functools.update_wrapper(self, definition.function)
        self.__gristmill_entry__ = _entry(definition)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        recording = _Recording.current
        if recording is None:
            return self.definition.function(*args, **kwargs)
        return recording.add_node(self.definition, args, kwargs)

    def __repr__(self) -> str:
        return f"<gristmill step {self.definition.name!r}>"


@overload
def step(function: F) -> F: ...


@overload
def step(*, name: str | None = None, inputs: Mapping[str, str] | None = None,
         outputs: Mapping[str, str] | None = None, cache: bool = False
         ) -> Callable[[F], F]: ...


def step(function: Callable[..., Any] | None = None, *, name: str | None = None,
         inputs: Mapping[str, str] | None = None, outputs: Mapping[str, str] | None = None,
         cache: bool = False) -> Any:
    """Mark a typed function as a step.

    Args:
        name: The step's name in the graph (default: the function's name).
        inputs: Data types that override or complete the annotations, e.g.
            ``{"doc": "file"}``.
        outputs: The outputs, name to data type: the function returns a dict of them.
            Without it the step has one output, ``result``, typed from the return
            annotation, and the function returns its value.
        cache: In a pipeline, a node of this step whose code, environment and inputs are
            those of an earlier succeeded node reuses its outputs instead of running (it
            is marked ``cached`` in the execution's steps).
    """

    def decorate(fn: Callable[..., Any]) -> Any:
        definition = _define(fn, name, inputs or {}, outputs)
        definition.cache = cache
        return Step(definition)

    return decorate(function) if function is not None else decorate


def _define(fn: Callable[..., Any], name: str | None, input_types: Mapping[str, str],
            outputs: Mapping[str, str] | None) -> StepDefinition:
    where = f"@step {fn.__name__}"
    hints = typing.get_type_hints(fn)
    declared = []
    for parameter in inspect.signature(fn).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise AuthoringError(f"{where}: *args and **kwargs cannot be step inputs")
        data_type = input_types.get(parameter.name) or data_type_of(
            hints.get(parameter.name, parameter.annotation), f"{where}, {parameter.name}")
        item: dict[str, Any] = {"name": parameter.name, "data_type": data_type}
        if parameter.default is not inspect.Parameter.empty:
            item["is_required"] = False
            if parameter.default is not None:
                item["default_value"] = parameter.default
        declared.append(item)
    unknown = sorted(set(input_types) - {i["name"] for i in declared})
    if unknown:
        raise AuthoringError(f"{where}: inputs= names {', '.join(unknown)}, which the "
                             "function does not take")
    if outputs is None:
        result_type = data_type_of(hints.get("return", inspect.Parameter.empty),
                                   f"{where}, return value")
        produced = [{"name": SINGLE_OUTPUT, "data_type": result_type}]
    else:
        bad = [f"{k}: {v}" for k, v in outputs.items() if v not in DATA_TYPES]
        if bad or not outputs:
            raise AuthoringError(f"{where}: outputs= maps names to one of "
                                 f"{', '.join(DATA_TYPES)} (got {', '.join(bad) or 'none'})")
        produced = [{"name": k, "data_type": v} for k, v in outputs.items()]
    return StepDefinition(fn, name or fn.__name__, declared, produced, outputs is None)


def _entry(definition: StepDefinition) -> Callable[..., Any]:
    """What the runner calls: the function, its one output wrapped in the dict of outputs."""
    fn = definition.function

    @functools.wraps(fn)
    def entry(*args: Any, **kwargs: Any) -> Any:
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            async def single() -> Any:
                value = await result
                return {SINGLE_OUTPUT: value} if definition.single_output else value

            return single()
        return {SINGLE_OUTPUT: result} if definition.single_output else result

    return entry


# -- recording a pipeline ---------------------------------------------------------------------


@dataclass(frozen=True)
class PipelineInput:
    """A parameter of a ``@pipeline`` function while it is recorded."""

    name: str


@dataclass(frozen=True)
class NodeOutput:
    node: str
    output: str
    data_type: str


class NodeHandle:
    """What calling a step inside a pipeline returns: its outputs, by name
    (``handle["accuracy"]``); a one-output step's handle stands for that output."""

    def __init__(self, node: str, outputs: list[dict[str, Any]], single: bool) -> None:
        self.node = node
        self._outputs = {o["name"]: o["data_type"] for o in outputs}
        self.single = single

    def __getitem__(self, output: str) -> NodeOutput:
        if output not in self._outputs:
            raise AuthoringError(f"Node {self.node!r} has no output {output!r} (it has: "
                                 f"{', '.join(self._outputs)})")
        return NodeOutput(self.node, output, self._outputs[output])

    def only(self) -> NodeOutput:
        if len(self._outputs) != 1:
            raise AuthoringError(f"Node {self.node!r} has several outputs: pick one with "
                                 f"[name] ({', '.join(self._outputs)})")
        return self[next(iter(self._outputs))]

    def __repr__(self) -> str:
        return f"<node {self.node!r}>"


@dataclass
class _Recording:
    current: typing.ClassVar[_Recording | None] = None
    nodes: list[dict[str, Any]] = field(default_factory=list)
    steps: dict[str, StepDefinition] = field(default_factory=dict)

    def add_node(self, definition: StepDefinition, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> NodeHandle:
        known = self.steps.setdefault(definition.name, definition)
        if known is not definition:
            raise AuthoringError(f"Two different steps are named {definition.name!r}")
        try:
            bound = inspect.signature(definition.function).bind(*args, **kwargs)
        except TypeError as exc:
            raise AuthoringError(f"Calling step {definition.name!r}: {exc}") from None
        taken = {n["name"] for n in self.nodes}
        node_name, count = definition.name, 1
        while node_name in taken:
            count += 1
            node_name = f"{definition.name}-{count}"
        node: dict[str, Any] = {
            "name": node_name, "step": definition.name,
            "inputs": {k: source_of(v, f"Input {k!r} of node {node_name!r}")
                       for k, v in bound.arguments.items()}}
        if definition.check is not None:
            node["check"] = {"severity": definition.check}
        if definition.cache:
            node["cache"] = True
        self.nodes.append(node)
        return NodeHandle(node_name, definition.outputs, definition.single_output)


def source_of(value: Any, where: str) -> dict[str, Any]:
    """The graph source of a value given to a step inside a pipeline."""
    if isinstance(value, NodeHandle):
        value = value.only()
    if isinstance(value, NodeOutput):
        return {"node": value.node, "output": value.output}
    if isinstance(value, PipelineInput):
        return {"pipeline_input": value.name}
    if isinstance(value, Step):
        raise AuthoringError(f"{where}: got the step itself; call it to get its outputs")
    return {"constant": value}


@dataclass
class PipelineGraph:
    """A recorded pipeline: the nodes (with the step each runs), its outputs, its steps."""

    nodes: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    steps: dict[str, StepDefinition]
    metric_bounds: dict[str, Any] = field(default_factory=dict)


class Pipeline:
    """A ``@pipeline`` function. ``record()`` gives its graph; calling it runs the steps
    as plain Python, one after the other (for tests)."""

    def __init__(self, function: Callable[..., Any],
                 metric_bounds: Mapping[str, Any] | None = None) -> None:
        self.function = function
        self.metric_bounds = dict(metric_bounds or {})
        functools.update_wrapper(self, function)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    @property
    def folder(self) -> str:
        import os

        return os.path.dirname(os.path.abspath(inspect.getfile(self.function)))

    def record(self) -> PipelineGraph:
        if _Recording.current is not None:
            raise AuthoringError("A pipeline cannot be recorded inside another one")
        recording = _Recording()
        parameters = inspect.signature(self.function).parameters
        _Recording.current = recording
        try:
            returned = self.function(**{name: PipelineInput(name) for name in parameters})
        finally:
            _Recording.current = None
        if returned is None:
            returned = {}
        if not isinstance(returned, Mapping):
            raise AuthoringError(f"@pipeline {self.function.__name__} must return a dict of "
                                 "pipeline outputs (name -> a step's output)")
        outputs = []
        for name, value in returned.items():
            if isinstance(value, NodeHandle):
                value = value.only()
            if not isinstance(value, NodeOutput):
                raise AuthoringError(f"Pipeline output {name!r} must be a step's output, "
                                     f"got {type(value).__name__}")
            outputs.append({"name": name, "node": value.node, "output": value.output})
        if not recording.nodes:
            raise AuthoringError(f"@pipeline {self.function.__name__} calls no step")
        return PipelineGraph(recording.nodes, outputs, recording.steps, self.metric_bounds)


@overload
def pipeline(function: Callable[..., Any]) -> Pipeline: ...


@overload
def pipeline(*, metric_bounds: Mapping[str, Any] | None = None
             ) -> Callable[[Callable[..., Any]], Pipeline]: ...


def pipeline(function: Callable[..., Any] | None = None, *,
             metric_bounds: Mapping[str, Any] | None = None) -> Any:
    """Mark a function whose body calls steps as a multi-step pipeline; it returns a dict
    of pipeline outputs. Create it with ``Gristmill.create_pipeline(pipeline_name=...,
    pipeline=<this function>)``.

    Args:
        metric_bounds: Bounds on the metrics the execution's steps record, checked once
            every node succeeded: ``{"accuracy": {"min": 0.8, "severity": "error"}}``. A
            metric out of bounds (or not recorded) fails the execution (``"error"``, the
            default) or is listed in its ``warnings`` (``"warning"``). Of a list metric,
            every value is judged, or only the last with ``"list": "last"``.
    """

    def decorate(fn: Callable[..., Any]) -> Pipeline:
        return Pipeline(fn, metric_bounds)

    return decorate(function) if function is not None else decorate


def check(function: Callable[..., Any] | None = None, *, severity: str = "error",
          name: str | None = None) -> Any:
    """Mark a function taking node outputs and returning a bool as a check. In a pipeline
    it is a node; when it returns False, an ``"error"`` check fails the execution naming
    it, a ``"warning"`` check is listed in the execution's ``warnings``."""
    if severity not in ("error", "warning"):
        raise AuthoringError(f'@check severity is "error" or "warning", not {severity!r}')

    def decorate(fn: Callable[..., Any]) -> Step:
        definition = _define(fn, name, {}, {"result": "boolean"})
        definition.single_output = True
        definition.check = severity
        return Step(definition)

    return decorate(function) if function is not None else decorate
