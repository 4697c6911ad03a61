"""The longest pod id a local warm worker can get is stored with its deployment logs:
``local-<deployment>@<variant pipeline>-<generation>`` (executors/local_workers.py PodIds,
executors/workers.py variant_key), names of 100 characters each, over 200 characters.
deployment_logs.pod_id was 100 characters: PostgreSQL refused such a worker's lines
(migration 0011). On the real control service and a real warm worker, SQLite and
PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gristmill_platform.executors.workers import variant_key
from gristmill_platform.steps.names import RESOURCE_NAME
from tests.platform.stepkit import archive_of, post_step, step_form, write_folder
from tests.platform.test_low_latency import eventually
from tests.platform.test_rollout import INFO_OUT, TEXT_IN, endpoint, set_traffic
from tests.platform.test_runs import make_pipeline

STEP_CODE = '''
print("imported, ready to answer", flush=True)


def answer(text: str) -> dict:
    return {"info": {"text": text}}
'''


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return archive_of(write_folder(tmp_path_factory.mktemp("long-ids"),
                                   {"src/steps.py": STEP_CODE}))


def longest(prefix: str) -> str:
    """The longest name a deployment or pipeline can have."""
    name = prefix.ljust(100, "x")
    assert RESOURCE_NAME.fullmatch(name) and not RESOURCE_NAME.fullmatch(name + "x")
    return name


def test_the_worker_with_the_longest_id_writes_its_logs(gristmill_env, api, archive,
                                                        unique) -> None:
    name = longest(f"long-{unique}-")
    champion = make_pipeline(api, archive, f"long-c-{unique}", "answer", TEXT_IN, INFO_OUT)
    # from a step of its own (a function pipeline of that name: test_long_names.py)
    step = f"long-s-{unique}"
    created = post_step(api, step_form(step, function_path="src/steps.py",
                                       function_name="answer", inputs=TEXT_IN,
                                       outputs=INFO_OUT), archive)
    assert created.status_code == 201, created.text
    eventually(lambda: api.get(f"/steps/{step}").json()["creation_info"]["status"]
               == "ready" or None,
               "the step to be ready")
    variant = longest(f"long-v-{unique}-")
    made = api.post("/pipelines", json={"pipeline_name": variant, "step_names": [step]})
    assert made.status_code == 201, made.text
    token = endpoint(api, champion, name, "low_latency")
    assert set_traffic(api, name, split={variant: 1}).status_code == 200
    answer = httpx.post(f"{gristmill_env.url}/endpoints/{name}", json={"text": "hi"},
                        timeout=120, follow_redirects=True,
                        headers={"Authorization": f"EndpointToken {token}"})
    assert answer.status_code == 200, answer.text
    prefix = f"local-{variant_key(name, variant)}-"
    assert len(prefix) > 200

    def imported() -> dict[str, Any] | None:
        response = api.post(f"/deployments/{name}/logs", json={})
        assert response.status_code == 200, response.text
        return next((line for line in response.json()
                     if line["pod_id"].startswith(prefix)
                     and "imported, ready to answer" in line["message"]), None)
    line = eventually(imported, "the variant worker's import output in the deployment logs")
    assert line["pod_id"][len(prefix):].isdigit(), line
