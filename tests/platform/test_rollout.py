"""Safe rollout end to end (docs/rollout.md): traffic rules on low-latency and elastic
endpoints, on the real control service and real warm workers, on SQLite and PostgreSQL.

That a shadow never delays the answer is proven without timing: the shadow waits on a gate
the test opens only after it has the answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.platform.stepkit import archive_of, write_folder
from tests.platform.test_auth import assert_error
from tests.platform.test_low_latency import eventually
from tests.platform.test_runs import make_pipeline

STEP_CODE = '''
import os
import time
from pathlib import Path


def champion(text: str) -> dict:
    return {"info": {"who": "champion", "text": text}}


def challenger(text: str) -> dict:
    return {"info": {"who": "challenger", "text": text}}


def crashing(text: str) -> dict:
    raise RuntimeError("the challenger crashed")


def gated(text: str) -> dict:
    # the test opens the gate (creates the file named by the input) once it has its answer
    deadline = time.monotonic() + 120
    while not Path(text).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return {"info": {"who": "gated", "text": text}}


def scratch(text: str) -> dict:
    # a file in the execution's scratch folder, read back once the gate (text) opens
    folder = Path(os.environ["GRISTMILL_IO_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kept").write_text(text)
    Path(text + ".started").write_text("")
    deadline = time.monotonic() + 120
    while not Path(text).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return {"info": {"who": "scratch", "text": (folder / "kept").read_text()}}


def other_io(number: float) -> dict:
    return {"info": {"who": "other"}}
'''

TEXT_IN = [{"name": "text", "data_type": "string"}]
INFO_OUT = [{"name": "info", "data_type": "json"}]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return archive_of(write_folder(tmp_path_factory.mktemp("rollout"),
                                   {"src/steps.py": STEP_CODE}))


def pipelines(api: httpx.Client, archive: bytes, unique: str) -> dict[str, str]:
    names = {}
    for function in ("champion", "challenger", "crashing", "gated"):
        names[function] = make_pipeline(api, archive, f"{function[:5]}-{unique}", function,
                                        TEXT_IN, INFO_OUT)
    names["other_io"] = make_pipeline(api, archive, f"other-{unique}", "other_io",
                                      [{"name": "number", "data_type": "number"}], INFO_OUT)
    return names


def endpoint(api: httpx.Client, pipeline: str, name: str, mode: str) -> str:
    response = api.post("/endpoints", json={"pipeline_name": pipeline, "name": name,
                                            "mode": mode})
    assert response.status_code == 201, response.text
    return str(response.json()["endpoint_token"])


def ask(env: Any, name: str, token: str, text: str) -> tuple[str, str, str]:
    """A plain HTTP call: (answering pipeline header, who answered, execution id)."""
    response = httpx.post(f"{env.url}/endpoints/{name}", json={"text": text}, timeout=120,
                          headers={"Authorization": f"EndpointToken {token}"},
                          follow_redirects=True)
    assert response.status_code == 200, response.text
    return (response.headers["x-gristmill-pipeline"],
            response.json()["outputs"]["info"]["who"],
            response.headers["craft-ai-execution-id"])


def set_traffic(api: httpx.Client, name: str, **rule: Any) -> httpx.Response:
    return api.put(f"/deployments/{name}/traffic", json=rule)


def executions(api: httpx.Client, name: str) -> list[dict[str, Any]]:
    response = api.get(f"/deployments/{name}/executions")
    assert response.status_code == 200, response.text
    return list(response.json())


@pytest.mark.parametrize("mode", ["low_latency", "elastic"])
def test_rules_route_calls_and_record_the_pipeline(gristmill_env, api, archive, unique,
                                                   mode, tmp_path: Path) -> None:
    names = pipelines(api, archive, unique)
    name = f"ro-{unique}"
    token = endpoint(api, names["champion"], name, mode)
    champion, challenger = names["champion"], names["challenger"]

    # checked when set: 400 naming the problem, nothing stored
    assert_error(set_traffic(api, name, shadow=[names["other_io"]]), 400,
                 f"Pipeline '{names['other_io']}' does not have the endpoint's inputs: "
                 "missing text; unexpected number")
    assert_error(set_traffic(api, name, split={champion: 1}, shadow=[challenger]), 400,
                 "exactly one")
    assert_error(set_traffic(api, name, split={f"nope-{unique}": 1}), 400, "not found")
    assert_error(set_traffic(api, name, shadow=[champion]), 400, "cannot shadow itself")
    assert api.get(f"/deployments/{name}/traffic").json()["rule"] == {}

    # key split: exact
    response = set_traffic(api, name, key="text", routes={"b": challenger}, default=champion)
    assert response.status_code == 200, response.text
    assert ask(gristmill_env, name, token, "b")[:2] == (challenger, "challenger")
    assert ask(gristmill_env, name, token, "a")[:2] == (champion, "champion")

    # random split: both answer, and the header always names the one that did
    assert set_traffic(api, name, split={champion: 1, challenger: 1}).status_code == 200
    seen = set()
    for i in range(24 if mode == "low_latency" else 10):
        header, who, _ = ask(gristmill_env, name, token, f"s{i}")
        assert header == (champion if who == "champion" else challenger)
        seen.add(who)
    if mode == "low_latency":  # 24 fair draws all alike: a 1 in 8 million chance
        assert seen == {"champion", "challenger"}

    # shadows: a crashing one and one that has not finished never touch the answer
    gate = tmp_path / "gate"
    assert set_traffic(api, name, shadow=[names["crashing"], names["gated"]]
                       ).status_code == 200
    header, who, answered = ask(gristmill_env, name, token, str(gate))
    assert (header, who) == (champion, "champion")
    copies = eventually(lambda: [e for e in executions(api, name) if e["shadow"]]
                        if len([e for e in executions(api, name) if e["shadow"]]) == 2
                        else None, "the two shadow copies")
    by_pipeline = {e["pipeline_name"]: e for e in copies}
    assert set(by_pipeline) == {names["crashing"], names["gated"]}
    # the answer came while the gated copy could not have finished: its gate was closed
    assert not gate.exists()
    gate.write_text("open")
    eventually(lambda: {e["pipeline_name"]: e["status"] for e in executions(api, name)
                        if e["shadow"]} == {names["crashing"]: "Failed",
                                            names["gated"]: "Succeeded"},
               "the shadows ended, one failed, one succeeded")
    answer = api.get(f"/executions/{answered}").json()
    assert (answer["pipeline_name"], answer["shadow"]) == (champion, False)

    # no rule: the own pipeline again; every change was recorded
    assert set_traffic(api, name).status_code == 200
    assert ask(gristmill_env, name, token, "b")[:2] == (champion, "champion")
    read = api.get(f"/deployments/{name}/traffic").json()
    assert [c["value"] for c in read["changes"]][:2] == [
        {}, {"shadow": [names["crashing"], names["gated"]]}]
    assert all(c["changed_by"] and c["changed_at"] for c in read["changes"])
    assert len(read["changes"]) == 4


def test_validations_flag_executions_and_still_answer(gristmill_env, api, archive,
                                                      unique) -> None:
    name = f"va-{unique}"
    pipeline = make_pipeline(api, archive, f"champ-{unique}", "champion", TEXT_IN, INFO_OUT)
    token = endpoint(api, pipeline, name, "low_latency")
    assert_error(api.put(f"/deployments/{name}/validations", json={"bad": "text <"}), 400,
                 "not a valid expression")
    response = api.put(f"/deployments/{name}/validations",
                       json={"short": "len(text) < 5", "champion": "info['who'] == 'champion'"})
    assert response.status_code == 200, response.text
    _, who, long_call = ask(gristmill_env, name, token, "a long text")
    _, _, short_call = ask(gristmill_env, name, token, "ok")
    assert who == "champion"

    def failures(execution_id: str) -> Any:
        read = api.get(f"/executions/{execution_id}").json()
        return read["validation_failures"] if read["status"] == "Succeeded" else None

    assert eventually(lambda: failures(long_call) is not None and failures(long_call),
                      "flagged") == ["short"]
    eventually(lambda: failures(short_call) == [], "not flagged")
    read = api.get(f"/deployments/{name}").json()["traffic"]
    assert read["validation_counts"] == {"short": 1}
    (variant,) = read["comparison"]
    assert (variant["pipeline_name"], variant["shadow"], variant["calls"],
            variant["failure_rate"]) == (pipeline, False, 2, 0.0)
    assert variant["latency_ms_p50"] <= variant["latency_ms_p95"]

    # the export: one row per execution, read back with pyarrow
    import io
    import json as jsonlib

    import pyarrow.parquet as pq

    from tests.platform.test_datastore import download

    exported = api.post(f"/deployments/{name}/executions/export",
                        json={"datastore_path": f"exports/{name}.parquet"})
    assert exported.status_code == 200, exported.text
    assert exported.json() == {"path": f"exports/{name}.parquet", "rows": 2,
                               "format": "parquet"}
    table = pq.read_table(io.BytesIO(download(api, f"exports/{name}.parquet").content))
    assert table.column_names == ["id", "pipeline", "shadow", "status", "created", "ended",
                                  "duration_ms", "inputs", "outputs", "validation_failures"]
    rows = {r["id"]: r for r in table.to_pylist()}
    assert set(rows) == {long_call, short_call}
    assert rows[long_call]["validation_failures"] == ["short"]
    assert jsonlib.loads(rows[long_call]["inputs"]) == {"text": "a long text"}
    assert jsonlib.loads(rows[short_call]["outputs"])["info"]["who"] == "champion"
    assert rows[short_call]["pipeline"] == pipeline and rows[short_call]["shadow"] is False
    assert rows[short_call]["duration_ms"] >= 0

    exported = api.post(f"/deployments/{name}/executions/export",
                        json={"datastore_path": f"exports/{name}.jsonl", "format": "jsonl",
                              "start": "2000-01-01T00:00:00+00:00"})
    lines = download(api, f"exports/{name}.jsonl").text.splitlines()
    assert exported.json()["rows"] == len(lines) == 2
    assert {jsonlib.loads(line)["id"] for line in lines} == {long_call, short_call}
    empty = api.post(f"/deployments/{name}/executions/export",
                     json={"datastore_path": f"exports/{name}-none.jsonl", "format": "jsonl",
                           "end": "2000-01-01T00:00:00+00:00"})
    assert empty.json()["rows"] == 0

    for body, fragment in (
            ({"datastore_path": "x.csv", "format": "csv"}, "format must be one of"),
            ({"datastore_path": "x", "start": "2020-01-01T00:00:00"}, "time zone"),
            ({"datastore_path": "x", "start": "yesterday"}, "ISO 8601"),
            ({}, "datastore_path is required"),
            ({"datastore_path": "../etc/passwd"}, ""),
            # the platform's own files (step archives) are written through the raw backend
            ({"datastore_path": ".gristmill/steps/x/code.tgz"}, "is reserved")):
        assert_error(api.post(f"/deployments/{name}/executions/export", json=body), 400,
                     fragment)


@pytest.mark.parametrize("mode", ["low_latency", "elastic"])
def test_validations_judge_the_pipeline_a_rule_routes_to(gristmill_env, api, archive, unique,
                                                          mode) -> None:
    """A call another pipeline answered (a split) and a shadow copy are checked against the
    deployment's validations too, on the warm path as on the elastic one."""
    names = pipelines(api, archive, unique)
    name = f"vr-{mode.replace('_', '')}-{unique}"
    token = endpoint(api, names["champion"], name, mode)
    assert api.put(f"/deployments/{name}/validations",
                   json={"champion": "info['who'] == 'champion'"}).status_code == 200

    def failures(execution_id: str) -> Any:
        read = api.get(f"/executions/{execution_id}").json()
        return read["validation_failures"] if read["status"] == "Succeeded" else None

    assert set_traffic(api, name, split={names["challenger"]: 1}).status_code == 200
    answered, who, routed = ask(gristmill_env, name, token, "routed")
    assert (answered, who) == (names["challenger"], "challenger")
    assert eventually(lambda: failures(routed), "flagged") == ["champion"]

    assert set_traffic(api, name, shadow=[names["challenger"]]).status_code == 200
    _, who, own = ask(gristmill_env, name, token, "shadowed")
    assert who == "champion"
    eventually(lambda: failures(own) == [], "not flagged")

    def shadow_failures() -> Any:
        copies = [e for e in executions(api, name)
                  if e.get("shadow") and e["pipeline_name"] == names["challenger"]]
        return failures(copies[0]["execution_id"]) if copies else None

    assert eventually(shadow_failures, "the shadow copy flagged") == ["champion"]


def test_sdk_sets_rules_validations_and_exports(gristmill_env, api, archive, unique) -> None:
    from gristmill import Gristmill
    from gristmill.errors import APIError

    names = pipelines(api, archive, unique)
    name = f"sd-{unique}"
    endpoint(api, names["champion"], name, "elastic")
    with Gristmill(environment_url=gristmill_env.url, sdk_token=gristmill_env.sdk_token,
                   progress=False) as sdk:
        read = sdk.set_deployment_traffic(name, key="text", routes={"x": names["challenger"]},
                                          default=names["champion"])
        assert read["rule"] == {"key": "text", "routes": {"x": names["challenger"]},
                                "default": names["champion"]}
        with pytest.raises(APIError) as raised:
            sdk.set_deployment_traffic(name, split={names["other_io"]: 1})
        assert "does not have the endpoint's inputs" in str(raised.value)
        assert sdk.get_deployment_traffic(name)["rule"]["key"] == "text"
        assert sdk.set_deployment_validations(name, {"v": "1 < 2"})["validations"] == {
            "v": "1 < 2"}
        assert sdk.set_deployment_traffic(name)["rule"] == {}
        assert sdk.get_deployment(name)["traffic"]["comparison"] == []
        assert sdk.export_deployment_executions(name, f"exports/{name}.jsonl",
                                                format="jsonl")["rows"] == 0

    # the CLI equivalent
    from typer.testing import CliRunner

    from gristmill.cli.app import app

    done = CliRunner().invoke(
        app, ["rollout", "export", name, f"exports/{name}-cli.parquet",
              "--start", "2000-01-01T00:00:00+00:00"],
        env={"GRISTMILL_ENVIRONMENT_URL": gristmill_env.url,
             "GRISTMILL_SDK_TOKEN": gristmill_env.sdk_token, "GRISTMILL_PROGRESS": "0"})
    assert done.exit_code == 0, done.output
    assert f"0 rows written to exports/{name}-cli.parquet (parquet)" in done.output
    bad = CliRunner().invoke(app, ["rollout", "export", name, "x", "--start", "soon"])
    assert bad.exit_code != 0 and "ISO 8601" in bad.output



def test_low_latency_variant_workers_follow_their_pipeline(gristmill_env, api, archive,
                                                           unique) -> None:
    """A variant pipeline deleted and created again under its name (new code): its warm
    workers roll to it, as the deployment's own roll on its update."""
    name = f"fo-{unique}"
    champion = make_pipeline(api, archive, f"champ-{unique}", "champion", TEXT_IN, INFO_OUT)
    variant = make_pipeline(api, archive, f"var-{unique}", "challenger", TEXT_IN, INFO_OUT)
    token = endpoint(api, champion, name, "low_latency")
    assert set_traffic(api, name, key="text", routes={"b": variant},
                       default=champion).status_code == 200
    assert ask(gristmill_env, name, token, "b")[:2] == (variant, "challenger")

    deleted = api.delete(f"/pipelines/{variant}")
    assert deleted.status_code == 200, deleted.text
    assert make_pipeline(api, archive, variant, "gated", TEXT_IN, INFO_OUT) == variant
    # the new code answers (gated: an existing file opens its gate at once)
    gate = Path(gristmill_env.data_dir) / f"gate-{unique}"
    gate.write_text("open")
    assert ask(gristmill_env, name, token, str(gate))[:2] == (champion, "champion")
    assert set_traffic(api, name, key="text", routes={str(gate): variant},
                       default=champion).status_code == 200
    assert ask(gristmill_env, name, token, str(gate))[:2] == (variant, "gated")

    # the deployment's update rolls its variants' workers too: still the new code, served
    updated = api.patch(f"/deployments/{name}", json={"description": "rolled"})
    assert updated.status_code == 200, updated.text
    assert ask(gristmill_env, name, token, str(gate))[:2] == (variant, "gated")
