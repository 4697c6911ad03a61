"""Traffic rules of a deployment (docs/rollout.md): which pipeline answers a call and
which get a shadow copy of it. Pure: parsing a rule, checking a variant, routing a call."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gristmill_platform.errors import BadRequest

KINDS = ("split", "key", "shadow")


class InvalidTraffic(BadRequest):
    name = "InvalidTrafficRule"


@dataclass(frozen=True)
class TrafficRule:
    """One of: a random split by weights, a split on an input's value, shadow copies.
    The empty rule (kind None): the deployment's own pipeline answers everything."""

    kind: str | None = None
    split: tuple[tuple[str, int], ...] = ()
    key: str | None = None
    routes: Mapping[str, str] = field(default_factory=dict)
    default: str | None = None
    shadow: tuple[str, ...] = ()

    def pipelines(self) -> set[str]:
        """Every pipeline the rule names (the variants to check and keep warm)."""
        named = {name for name, _ in self.split} | set(self.routes.values()) | set(self.shadow)
        if self.default:
            named.add(self.default)
        return named

    def document(self) -> dict[str, Any]:
        """As stored and shown: the SDK call's arguments."""
        if self.kind == "split":
            return {"split": dict(self.split)}
        if self.kind == "key":
            return {"key": self.key, "routes": dict(self.routes), "default": self.default}
        if self.kind == "shadow":
            return {"shadow": list(self.shadow)}
        return {}


NO_RULE = TrafficRule()


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidTraffic(f"{what} must be a pipeline name")
    return value


def parse_rule(body: Mapping[str, Any]) -> TrafficRule:
    """The rule of a PUT body (or a stored document); 400 unless it is exactly one rule."""
    unknown = set(body) - {"split", "key", "routes", "default", "shadow"}
    if unknown:
        raise InvalidTraffic(f"Unknown traffic rule fields: {', '.join(sorted(unknown))}")
    given = [kind for kind in KINDS if body.get(kind) is not None]
    extra = [f for f in ("routes", "default") if body.get(f) is not None]
    if len(given) > 1:
        raise InvalidTraffic(f"Give exactly one traffic rule, not {' and '.join(given)}")
    if extra and given != ["key"]:
        raise InvalidTraffic(f"{' and '.join(extra)} only go with key")
    if not given:
        return NO_RULE
    kind = given[0]
    if kind == "split":
        split = body["split"]
        if not isinstance(split, Mapping) or not split:
            raise InvalidTraffic("split must map pipeline names to weights")
        weights: list[tuple[str, int]] = []
        for name, weight in split.items():
            if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
                raise InvalidTraffic(f"The weight of {name!r} must be a whole number >= 0")
            weights.append((_name(name, "A split's key"), weight))
        if sum(w for _, w in weights) <= 0:
            raise InvalidTraffic("At least one weight of split must be above 0")
        return TrafficRule(kind="split", split=tuple(weights))
    if kind == "key":
        key, routes, default = body["key"], body.get("routes"), body.get("default")
        if not isinstance(key, str) or not key:
            raise InvalidTraffic("key must be the name of an input")
        if not isinstance(routes, Mapping) or not routes:
            raise InvalidTraffic("key needs routes: {\"<value>\": \"<pipeline>\", ...}")
        return TrafficRule(
            kind="key", key=key,
            routes={str(v): _name(p, f"The route of {v!r}") for v, p in routes.items()},
            default=_name(default, "default"))
    shadow = body["shadow"]
    if isinstance(shadow, str) or not isinstance(shadow, Sequence) or not shadow:
        raise InvalidTraffic("shadow must be a list of pipeline names")
    return TrafficRule(kind="shadow",
                       shadow=tuple(dict.fromkeys(_name(p, "A shadow") for p in shadow)))


def _signature(io: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    return {str(item["name"]): str(item.get("data_type")) for item in io}


def io_mismatch(pipeline: str, inputs: Sequence[Mapping[str, Any]],
                outputs: Sequence[Mapping[str, Any]],
                variant_inputs: Sequence[Mapping[str, Any]],
                variant_outputs: Sequence[Mapping[str, Any]]) -> str | None:
    """Why pipeline cannot stand in for the endpoint's own one, or None: it must take the
    endpoint's inputs and return its outputs (same names, same types)."""
    for what, own, theirs in (("inputs", inputs, variant_inputs),
                              ("outputs", outputs, variant_outputs)):
        want, have = _signature(own), _signature(theirs)
        if want != have:
            missing = sorted(set(want) - set(have))
            extra = sorted(set(have) - set(want))
            typed = sorted(n for n in set(want) & set(have) if want[n] != have[n])
            parts = ([f"missing {', '.join(missing)}"] if missing else []) \
                + ([f"unexpected {', '.join(extra)}"] if extra else []) \
                + ([f"other types for {', '.join(typed)}"] if typed else [])
            return (f"Pipeline {pipeline!r} does not have the endpoint's {what}: "
                    f"{'; '.join(parts)}")
    return None


@dataclass(frozen=True)
class Route:
    pipeline: str  # the one that answers
    shadows: tuple[str, ...] = ()


def _key_value(value: Any) -> str:
    # JSON true/false as the caller wrote them, numbers as in the routes' keys
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def route(rule: TrafficRule, own: str, inputs: Mapping[str, Any], rng: random.Random
          ) -> Route:
    """Which pipeline answers a call with these inputs, and which get a copy of it."""
    if rule.kind == "split":
        names = [n for n, _ in rule.split]
        weights = [w for _, w in rule.split]
        return Route(rng.choices(names, weights=weights)[0])
    if rule.kind == "key":
        assert rule.default is not None
        if rule.key is not None and rule.key in inputs:
            return Route(rule.routes.get(_key_value(inputs[rule.key]), rule.default))
        return Route(rule.default)
    if rule.kind == "shadow":
        return Route(own, rule.shadow)
    return Route(own)
