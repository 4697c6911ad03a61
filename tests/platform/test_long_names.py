"""A pipeline created from a function may have the longest name pipeline names allow
(100 characters): its hidden step, "pipeline:<name>", is stored (steps.name) and so is
its executions' step name (migration 0012). PostgreSQL refused both with a 500 before;
SQLite does not enforce lengths, so the test runs on both but only PostgreSQL could fail."""

from __future__ import annotations

import pytest

from gristmill_platform.steps.names import RESOURCE_NAME
from tests.platform.stepkit import archive_of, write_folder
from tests.platform.test_runs import make_pipeline, outputs_of, run_and_wait

STEP_CODE = '''
def shout(text: str) -> dict:
    return {"text": text.upper()}
'''
TEXT = [{"name": "text", "data_type": "string"}]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return archive_of(write_folder(tmp_path_factory.mktemp("long-names"),
                                   {"src/steps.py": STEP_CODE}))


def test_a_function_pipeline_with_the_longest_name_runs(api, archive, unique) -> None:
    name = f"long-{unique}-".ljust(100, "x")
    assert RESOURCE_NAME.fullmatch(name) and not RESOURCE_NAME.fullmatch(name + "x")
    make_pipeline(api, archive, name, "shout", TEXT, TEXT)

    read = api.get(f"/pipelines/{name}")
    assert read.status_code == 200, read.text
    execution_id, response = run_and_wait(api, name, {"text": "hi"})
    assert outputs_of(response) == {"text": "HI"}
    execution = api.get(f"/executions/{execution_id}").json()
    assert execution["pipeline_name"] == name
