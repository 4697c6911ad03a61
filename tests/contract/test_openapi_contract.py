"""The OpenAPI document against the running service: schemathesis sends generated
requests to every operation and checks that none answers a server error and that every
answer matches the documented schema. Bounded: a few examples per operation."""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.conftest import GristmillEnv

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis (dev extra) is absent")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
)

EXAMPLES_PER_OPERATION = 6


@pytest.fixture(scope="module")
def access_token(gristmill_env: GristmillEnv) -> str:
    answer = httpx.post(f"{gristmill_env.url}/api/v1/auth/refresh",
                        json={"refresh_token": gristmill_env.sdk_token}, timeout=60)
    answer.raise_for_status()
    return str(answer.json()["access_token"])


@pytest.fixture(scope="module")
def document(gristmill_env: GristmillEnv) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. FastAPI's "Duplicate Operation ID"
        answer = httpx.get(f"{gristmill_env.url}/openapi.json", timeout=60)
    answer.raise_for_status()
    return dict(answer.json())


STEP_CODE = """
def double(x: float) -> dict:
    print("doubling", x)
    return {"y": x * 2}
"""


@pytest.fixture(scope="module")
def seeded(gristmill_env: GristmillEnv, tmp_path_factory: pytest.TempPathFactory) -> str:
    """One of each resource, so list and get answers have items to check against."""
    from gristmill import Gristmill, Input, Output

    code = tmp_path_factory.mktemp("contract-step")
    (code / "steps.py").write_text(STEP_CODE)
    name = f"contract-{gristmill_env.database.kind}"
    with Gristmill(gristmill_env.url, gristmill_env.sdk_token, progress=False) as gm:
        gm.create_step(step_name=name, function_path="steps.py", function_name="double",
                       inputs=[Input(name="x", data_type="number", description="a number")],
                       outputs=[Output(name="y", data_type="number")],
                       container_config={"local_folder": str(code)})
        gm.create_pipeline(pipeline_name=name, step_name=name)
        gm.run_pipeline(name, {"x": 2})
        gm.create_deployment(pipeline_name=name, deployment_name=name,
                             execution_rule="endpoint")
        gm.create_or_update_environment_variable(f"CONTRACT_{gristmill_env.database.kind}", 1)
        (code / "data.txt").write_text("contract")
        gm.upload_data_store_object(str(code / "data.txt"), f"{name}/data.txt")
    return name


@pytest.fixture(scope="module")
def api_schema(gristmill_env: GristmillEnv, document: dict[str, Any], seeded: str) -> Any:
    schema = schemathesis.openapi.from_dict(document)
    schema.config.base_url = gristmill_env.url  # type: ignore[attr-defined]
    return schema


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, item in document["paths"].items()
            for method, op in item.items() if method in ("get", "post", "put", "patch",
                                                          "delete")]


def test_operation_ids_are_unique_and_every_operation_is_tagged(document) -> None:
    operations = _operations(document)
    ids = Counter(op["operationId"] for _, _, op in operations)
    assert [i for i, n in ids.items() if n > 1] == []
    assert all(op.get("tags") for _, _, op in operations)


def test_bodies_and_errors_are_described(document) -> None:
    from gristmill_platform.http.openapi import OPERATIONS

    present = {(m, p) for m, p, _ in _operations(document)}
    assert set(OPERATIONS) <= present, set(OPERATIONS) - present  # the table is not stale
    error = {"$ref": "#/components/schemas/ErrorBody"}
    for _, path, op in _operations(document):
        if path.startswith("/api/v1"):
            assert op["responses"]["404"]["content"]["application/json"]["schema"] == error
    steps = document["paths"]["/api/v1/steps"]["post"]["requestBody"]["content"]
    # the step form as craft-ai-sdk sends it (multipart with the code) and JSON, both
    assert {"application/json", "multipart/form-data"} <= set(steps)


def _exerciser(operation: Any, headers: dict[str, str], checks: list[Any]) -> Any:
    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck), database=None)
    def exercise(case: Any) -> None:
        case.call_and_validate(headers=headers, timeout=60, checks=checks)

    return exercise


def test_no_server_error_and_every_answer_matches_the_document(api_schema, access_token
                                                              ) -> None:
    """Each operation separately (the fixtures are per database, which schemathesis's own
    pytest parametrisation cannot follow); every failing operation is reported."""
    headers = {"Authorization": f"Bearer {access_token}"}
    failures: dict[str, str] = {}
    operations = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        operations += 1
        checks = [content_type_conformance, response_schema_conformance]
        # a documented 501 (a hosted-platform feature Gristmill has not) is the answer
        if "501" not in operation.definition.raw.get("responses", {}):
            checks.append(not_a_server_error)

        exercise = _exerciser(operation, headers, checks)
        try:
            exercise()
        except Exception as exc:  # report every operation, not only the first
            failures[operation.label] = f"{type(exc).__name__}: {str(exc)[:1500]}"
    assert operations > 50
    assert failures == {}, "\n\n".join(f"{k}\n{v}" for k, v in failures.items())
