"""The values given to pinned Helm charts, checked against the structure those chart
versions accept, so a value the chart's schema refuses fails here, not minutes into
`pulumi up`.

Traefik's chart ships a values.schema.json that refuses unknown keys (helm: "additional
properties 'tls' not allowed"). Its schema is not vendored here: the parts Gristmill sets
are encoded below from chart 39.0.8's values.schema.json. With
GRISTMILL_TRAEFIK_SCHEMA=<path to that chart's values.schema.json> the values are also
checked against the whole file (`helm pull traefik/traefik --version 39.0.8 --untar`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from gristmill_infra import charts
from gristmill_infra.ingress import traefik_values

CERTIFICATE = "arn:aws:acm:eu-west-3:123456789012:certificate/abc"


def _closed(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "additionalProperties": False}


_OBJECT: dict[str, Any] = {"type": "object"}

# Chart 39: an entry point's TLS is under `http`; the entry point and the top level refuse
# any key the chart does not know.
TRAEFIK_39_SCHEMA: dict[str, Any] = _closed(
    {
        "deployment": _OBJECT,
        "podDisruptionBudget": _closed(
            {"enabled": {"type": "boolean"}, "maxUnavailable": {}, "minAvailable": {}}
        ),
        "ingressClass": _closed(
            {
                "enabled": {"type": "boolean"},
                "isDefaultClass": {"type": "boolean"},
                "name": {"type": "string"},
            }
        ),
        "providers": _closed({"kubernetesIngress": _OBJECT, "kubernetesCRD": _OBJECT,
                              "kubernetesGateway": _OBJECT, "file": _OBJECT}),
        "ports": {
            "type": "object",
            "additionalProperties": _closed(
                {
                    key: {}
                    for key in (
                        "allowACMEByPass", "appProtocol", "asDefault", "containerPort",
                        "expose", "exposedPort", "forwardedHeaders", "hostIP", "hostPort",
                        "http3", "nodePort", "observability", "port", "protocol",
                        "proxyProtocol", "targetPort", "transport",
                    )
                }
                | {
                    "http": {
                        "type": "object",
                        "properties": {
                            "tls": {
                                "type": "object",
                                "properties": {"enabled": {"type": "boolean"}},
                            }
                        },
                    }
                }
            ),
        },
        "service": {
            "type": "object",
            "properties": {
                "type": {"type": "string"},
                "annotations": {"type": "object"},
                "spec": {"type": "object"},
            },
        },
        "nodeSelector": _OBJECT,
        "topologySpreadConstraints": {"type": "array"},
        "resources": _OBJECT,
        "logs": _OBJECT,
        "global": _OBJECT,
    }
)


def test_traefik_is_pinned_to_the_chart_the_schema_describes() -> None:
    assert charts.TRAEFIK.version.split(".")[0] == "39"


def test_traefik_values_fit_the_chart_39_structure() -> None:
    values = traefik_values(CERTIFICATE)
    jsonschema.validate(values, TRAEFIK_39_SCHEMA)
    assert values["ports"]["websecure"] == {"http": {"tls": {"enabled": False}}}


def test_the_pre_39_tls_key_is_refused() -> None:
    """What the environment used to send; chart 39's schema refuses it."""
    values = traefik_values(CERTIFICATE)
    values["ports"]["websecure"] = {"tls": {"enabled": False}}
    with pytest.raises(jsonschema.ValidationError, match="'tls' was unexpected"):
        jsonschema.validate(values, TRAEFIK_39_SCHEMA)


@pytest.mark.skipif(
    not os.environ.get("GRISTMILL_TRAEFIK_SCHEMA"),
    reason="GRISTMILL_TRAEFIK_SCHEMA (the pinned chart's values.schema.json) is not set",
)
def test_traefik_values_fit_the_pinned_charts_own_schema() -> None:
    schema = json.loads(Path(os.environ["GRISTMILL_TRAEFIK_SCHEMA"]).read_text())
    values = traefik_values(CERTIFICATE)
    jsonschema.validate(values, schema)
    old = traefik_values(CERTIFICATE)
    old["ports"]["websecure"] = {"tls": {"enabled": False}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(old, schema)
