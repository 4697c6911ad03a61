"""Traffic rules and validations (deployments/traffic.py, deployments/validations.py):
pure, so checked exhaustively here; end to end in tests/platform/test_rollout.py."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from gristmill_platform.deployments.traffic import (
    NO_RULE,
    InvalidTraffic,
    io_mismatch,
    parse_rule,
    route,
)
from gristmill_platform.deployments.validations import (
    InvalidValidation,
    failures,
    io_values,
    parse_validations,
)

ROUTES_NEEDED = 'key needs routes: {"<value>": "<pipeline>", ...}'


@pytest.mark.parametrize(("body", "message"), [
    ({"split": {"a": 1}, "shadow": ["b"]},
     "Give exactly one traffic rule, not split and shadow"),
    ({"split": {"a": 1}, "key": "x", "shadow": ["b"]},
     "Give exactly one traffic rule, not split and key and shadow"),
    ({"split": {}}, "split must map pipeline names to weights"),
    ({"split": ["a"]}, "split must map pipeline names to weights"),
    ({"split": {"a": -1}}, "The weight of 'a' must be a whole number >= 0"),
    ({"split": {"a": 1.5}}, "The weight of 'a' must be a whole number >= 0"),
    ({"split": {"a": True}}, "The weight of 'a' must be a whole number >= 0"),
    ({"split": {"a": 0, "b": 0}}, "At least one weight of split must be above 0"),
    ({"split": {"": 1}}, "A split's key must be a pipeline name"),
    ({"key": "x", "default": "a"}, ROUTES_NEEDED),
    ({"key": "x", "routes": {}, "default": "a"}, ROUTES_NEEDED),
    ({"key": "x", "routes": "a", "default": "a"}, ROUTES_NEEDED),
    ({"key": "x", "routes": {"1": "a"}}, "default must be a pipeline name"),
    ({"key": "x", "routes": {"1": ""}, "default": "a"},
     "The route of '1' must be a pipeline name"),
    ({"key": "", "routes": {"1": "a"}, "default": "a"}, "key must be the name of an input"),
    ({"key": 3, "routes": {"1": "a"}, "default": "a"}, "key must be the name of an input"),
    ({"shadow": "a"}, "shadow must be a list of pipeline names"),
    ({"shadow": []}, "shadow must be a list of pipeline names"),
    ({"shadow": [""]}, "A shadow must be a pipeline name"),
    ({"shadow": [5]}, "A shadow must be a pipeline name"),
    ({"routes": {"1": "a"}}, "routes only go with key"),
    ({"split": {"a": 1}, "default": "a"}, "default only go with key"),
    ({"shadow": ["a"], "routes": {"1": "a"}, "default": "b"},
     "routes and default only go with key"),
    ({"weights": {}, "rules": 1}, "Unknown traffic rule fields: rules, weights"),
])
def test_bad_rules_are_rejected_with_the_reason(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidTraffic) as raised:
        parse_rule(body)
    assert raised.value.message == message
    assert raised.value.status_code == 400


def test_rules_round_trip_through_their_document() -> None:
    for body in ({"split": {"a": 2, "b": 1}},
                 {"key": "country", "routes": {"fr": "a", "1": "b"}, "default": "c"},
                 {"shadow": ["b", "c"]}, {}):
        assert parse_rule(body).document() == body
    assert parse_rule({}) is NO_RULE
    assert parse_rule({"key": "k", "routes": {"x": "a"}, "default": "c"}).pipelines() == {
        "a", "c"}


def test_split_ratio_stays_within_a_binomial_bound() -> None:
    rule = parse_rule({"split": {"a": 2, "b": 1}})
    n, p = 30_000, 2 / 3
    for seed in range(5):
        rng = random.Random(seed)
        chosen = [route(rule, "own", {}, rng).pipeline for _ in range(n)]
        assert set(chosen) == {"a", "b"}
        # 5 standard deviations: a wrong ratio (even 0.65) fails, chance alone
        # virtually never does
        assert abs(chosen.count("a") - n * p) < 5 * math.sqrt(n * p * (1 - p))


def test_a_zero_weight_pipeline_never_answers() -> None:
    rule = parse_rule({"split": {"a": 1, "b": 0}})
    rng = random.Random(1)
    assert {route(rule, "own", {}, rng).pipeline for _ in range(1000)} == {"a"}


def test_key_routing_is_exact() -> None:
    rule = parse_rule({"key": "country", "routes": {"fr": "a", "1": "b", "true": "c"},
                       "default": "d"})
    rng = random.Random(0)
    assert route(rule, "own", {"country": "fr"}, rng).pipeline == "a"
    assert route(rule, "own", {"country": 1}, rng).pipeline == "b"
    assert route(rule, "own", {"country": True}, rng).pipeline == "c"
    # JSON false as the caller wrote it, not Python's False
    assert route(parse_rule({"key": "on", "routes": {"false": "a", "true": "b"},
                             "default": "d"}), "own", {"on": False}, rng).pipeline == "a"
    assert route(rule, "own", {"country": "FR"}, rng).pipeline == "d"
    assert route(rule, "own", {}, rng).pipeline == "d"


def test_shadow_keeps_the_own_pipeline_answering() -> None:
    chosen = route(parse_rule({"shadow": ["b", "c", "b"]}), "own", {}, random.Random(0))
    assert chosen.pipeline == "own"
    assert chosen.shadows == ("b", "c")
    assert route(NO_RULE, "own", {"x": 1}, random.Random(0)).pipeline == "own"


def test_variants_must_take_the_inputs_and_return_the_outputs() -> None:
    ins = [{"name": "text", "data_type": "string"}]
    outs = [{"name": "score", "data_type": "number"}]
    assert io_mismatch("v", ins, outs, ins, outs) is None
    message = io_mismatch("v", ins, outs, [{"name": "x", "data_type": "string"}], outs)
    assert message == ("Pipeline 'v' does not have the endpoint's inputs: missing text; "
                       "unexpected x")
    message = io_mismatch("v", ins, outs, ins, [{"name": "score", "data_type": "string"}])
    assert message == ("Pipeline 'v' does not have the endpoint's outputs: "
                       "other types for score")
    # several of each, in name order
    two = [{"name": "a", "data_type": "string"}, {"name": "b", "data_type": "string"},
           {"name": "c", "data_type": "string"}, {"name": "d", "data_type": "string"}]
    theirs = [{"name": "c", "data_type": "number"}, {"name": "d", "data_type": "number"},
              {"name": "y", "data_type": "string"}, {"name": "x", "data_type": "string"}]
    assert io_mismatch("v", two, outs, theirs, outs) == (
        "Pipeline 'v' does not have the endpoint's inputs: missing a, b; unexpected x, y; "
        "other types for c, d")


def test_validations_are_parsed_and_judged_without_python_eval() -> None:
    rules = parse_validations({"low": "score <= 0.9", "short": "len(text) < 5",
                               "known": "label in ['cat', 'dog']"})
    inputs = [{"pipeline_input_name": "text", "value": "abc"}]
    outputs = [{"pipeline_output_name": "score", "value": 0.95},
               {"pipeline_output_name": "label", "value": "cat"}]
    assert failures(rules, io_values(inputs, outputs)) == ["low"]
    # a name missing from the execution, or a type error, is a violation, not a crash
    assert failures({"x": "missing > 1", "y": "text + 1"},
                    io_values(inputs, outputs)) == ["x", "y"]
    # no escape to Python: dunder attributes and imports are refused
    assert failures({"esc": "text.__class__.__bases__"}, io_values(inputs, [])) == ["esc"]
    assert failures({"imp": "__import__('os').getcwd()"}, {}) == ["imp"]


@pytest.mark.parametrize(("body", "fragment"), [
    ({"bad": "score <="}, "not a valid expression"),
    ({"empty": " "}, "must be an expression"),
    ({"num": 3}, "must be an expression"),
])
def test_bad_validations_are_rejected(body: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidValidation) as raised:
        parse_validations(body)
    assert fragment in raised.value.message


def test_comparison_per_variant() -> None:
    from gristmill_platform.deployments.comparison import (
        Counts,
        assemble,
        percentile,
        validation_counts,
    )

    latencies = [float(ms) for ms in range(1, 101)]
    variants = assemble(
        {("b", False): Counts(3, 2, 1), ("a", True): Counts(1, 1, 0),
         ("a", False): Counts(100, 100, 0)},
        {("a", False): {50: percentile(latencies, 50), 95: percentile(latencies, 95)},
         ("a", True): {50: 5.0, 95: 5.0}, ("b", False): {50: 10.0, 95: 30.0}},
        [(("b", False), ["low"]), (("b", False), ["low", "x"])])
    assert [(v["pipeline_name"], v["shadow"]) for v in variants] == [
        ("a", False), ("a", True), ("b", False)]
    a, _, b = variants
    assert (a["calls"], a["failure_rate"], a["latency_ms_p50"], a["latency_ms_p95"]) == (
        100, 0.0, 50.0, 95.0)
    assert (b["calls"], b["ended"], b["failure_rate"], b["latency_ms_p50"]) == (3, 2, 0.5, 10.0)
    assert b["validation_failures"] == {"low": 2, "x": 1}
    assert validation_counts(variants) == {"low": 2, "x": 1}
    # nothing ended yet: no rate, no latency
    [pending] = assemble({("c", False): Counts(2, 0, 0)}, {}, [])
    assert (pending["failure_rate"], pending["latency_ms_p50"]) == (None, None)


@pytest.mark.parametrize(("count", "q", "expected"), [
    (1, 50, 1), (1, 95, 1), (2, 50, 1), (3, 50, 2), (100, 50, 50), (100, 95, 95),
    (101, 95, 96), (20, 95, 19)])
def test_the_nearest_rank(count: int, q: int, expected: int) -> None:
    from gristmill_platform.deployments.comparison import rank

    assert rank(count, q) == expected
