"""Console pages over HTTP with real executions, objects, tokens and users."""

from __future__ import annotations

import re

import httpx

from tests.platform.console.conftest import Console
from tests.platform.helpers import new_user_token
from tests.platform.test_runs import run, wait


def _run(gristmill_env, pipeline: str, text: str) -> str:
    with gristmill_env.client() as api:
        response = run(api, pipeline, {"text": text})
        assert response.status_code == 201, response.text
        execution_id = response.json()["execution_id"]
        assert wait(api, execution_id).status_code == 200
        api.put("/metrics/single-value/score", json={"value": len(text),
                                                    "execution_id": execution_id})
        return str(execution_id)


def test_execution_page_compare_run_again_and_paging(console: Console, gristmill_env,
                                                     echo_pipeline) -> None:
    first, second, third = (_run(gristmill_env, echo_pipeline, t) for t in ("a", "bb", "ccc"))
    page = console.get(f"/console/executions/{first}")
    assert page.status_code == 200
    assert "Succeeded" in page.text or "succeeded" in page.text
    assert "&#34;A&#34;" in page.text or '"A"' in page.text  # the output value
    assert 'hx-get="/console/executions/' not in page.text.split('id="logs"')[1][:80]
    ended = console.get(f"/console/executions/{first}/logs")
    assert ended.headers["hx-refresh"] == "true"  # a live page reloads once when it ends

    compare = console.get("/console/executions/compare",
                          params=[("ids", first), ("ids", second)])
    assert compare.status_code == 200
    assert first in compare.text and second in compare.text and "metric score" in compare.text
    one = console.get("/console/executions/compare", params=[("ids", first)])
    assert one.status_code == 400 and "Select from 2" in one.text

    # key paging: two per page, newest first, every execution once
    seen: list[str] = []
    url = f"/console/executions?pipeline={echo_pipeline}&limit=2"
    while url:
        listing = console.get(url)
        assert listing.status_code == 200
        seen += re.findall(r'<tr id="exec-([^"]+)"', listing.text)
        found = re.search(r'rel="next" href="([^"]+)"', listing.text)
        url = found.group(1).replace("&amp;", "&") if found else ""
    assert seen[:3] == [third, second, first]
    assert len(seen) == len(set(seen))
    ascending = console.get(f"/console/executions?pipeline={echo_pipeline}&order=asc")
    ids = re.findall(r'<tr id="exec-([^"]+)"', ascending.text)
    assert ids.index(first) < ids.index(third)
    bad = console.get("/console/executions?cursor=garbage!")
    assert bad.status_code == 400

    again = console.post(f"/console/executions/{second}/run-again")
    assert again.status_code == 303
    new_id = again.headers["location"].rsplit("/", 1)[1]
    with gristmill_env.client() as api:
        assert wait(api, new_id).json()["outputs"][0]["value"] == "BB"


def test_run_again_sends_an_uploaded_file_again(console: Console, gristmill_env,
                                                echo_pipeline, unique) -> None:
    from tests.platform.stepkit import archive_of, write_folder
    from tests.platform.test_runs import STEP_CODE, make_pipeline

    with gristmill_env.client() as api:
        archive = archive_of(write_folder(gristmill_env.data_dir / f"rerun-{unique}",
                                          {"src/steps.py": STEP_CODE}))
        pipeline = make_pipeline(api, archive, f"console-files-{unique}", "files",
                                 [{"name": "doc", "data_type": "file"},
                                  {"name": "suffix", "data_type": "string"}],
                                 [{"name": "result", "data_type": "file"},
                                  {"name": "size", "data_type": "number"}])
        started = run(api, pipeline, {"suffix": "!"}, files={"doc": ("doc.txt", b"kept")})
        assert started.status_code == 201, started.text
        first = started.json()["execution_id"]
        assert wait(api, first).status_code == 200

    again = console.post(f"/console/executions/{first}/run-again")
    assert again.status_code == 303, again.text
    second = again.headers["location"].rsplit("/", 1)[1]
    assert second != first
    with gristmill_env.client() as api:
        outputs = {o["pipeline_output_name"]: o for o in wait(api, second).json()["outputs"]}
        assert outputs["size"]["value"] == 4
        assert api.get(f"/executions/{second}/inputs/doc").content == b"kept"
        assert api.get(f"/executions/{second}/outputs/result").content == b"kept!"
        read = api.get(f"/executions/{second}").json()
        [doc] = [i for i in read["inputs"] if i["pipeline_input_name"] == "doc"]
        assert doc["file"]["filename"] == "doc.txt"
    missing = console.post("/console/executions/no-such-execution/run-again")
    assert missing.status_code == 404


def test_data_store_info_download_delete(console: Console, gristmill_env, unique) -> None:
    path = f"console/{unique}/hello.txt"
    with gristmill_env.client() as api:
        signed = api.get("/data-store/upload", params={"path_to_object": path}).json()
    uploaded = httpx.post(signed["signed_url"], data=signed["fields"],
                          files={"file": ("hello.txt", b"hello console")})
    assert uploaded.status_code == 204
    folder = console.get(f"/console/data-store?prefix=console/{unique}/")
    assert "hello.txt" in folder.text
    root = console.get("/console/data-store?prefix=console/")
    assert f"{unique}/" in root.text
    info = console.get(f"/console/data-store/info?path={path}")
    assert "13 bytes" in info.text
    download = console.get(f"/console/data-store/object?path={path}")
    assert download.content == b"hello console"
    assert console.post("/console/data-store/delete", {"path": path}).status_code == 303
    missing = console.get(f"/console/data-store/info?path={path}")
    assert missing.status_code == 404


def test_deleting_in_a_folder_of_any_name_goes_back_to_that_folder(
        console: Console, gristmill_env, unique) -> None:
    """The folder's name is the user's: characters beyond Latin-1 were a 500 (the redirect
    held them raw), '+' and '#' sent the user to another folder."""
    from urllib.parse import parse_qs, urlsplit

    for folder in (f"数据\u202e-{unique}", f"a+b#c-{unique}"):
        path = f"{folder}/x.csv"
        with gristmill_env.client() as api:
            signed = api.get("/data-store/upload", params={"path_to_object": path}).json()
        assert httpx.post(signed["signed_url"], data=signed["fields"],
                          files={"file": ("x.csv", b"1")}).status_code == 204
        deleted = console.post("/console/data-store/delete", {"path": path})
        assert deleted.status_code == 303
        location = urlsplit(deleted.headers["location"])
        assert location.path == "/console/data-store" and not location.fragment
        assert parse_qs(location.query)["prefix"] == [f"{folder}/"]


def test_a_malformed_multipart_end_is_a_400(console: Console, unique) -> None:
    for parts in ([1], [{"number": "abc", "metadata": "e"}], [{"metadata": "e"}],
                  [{"number": True, "metadata": "e"}], [{"number": 1}]):
        response = console.post_json("/console/data-store/multipart/end",
                                     {"path": f"mp-{unique}", "config": {}, "parts": parts})
        assert response.status_code == 400, (parts, response.text)
        assert "parts must be a list of" in response.text


def test_values_are_shown_as_their_text(console: Console, gristmill_env,
                                        echo_pipeline) -> None:
    """As JSON, but the text as it is (escaped as HTML): not \\u00e9 for é or \\u003c for <."""
    first = _run(gristmill_env, echo_pipeline, "café <b>x</b> & 'q'")
    second = _run(gristmill_env, echo_pipeline, "ü")
    page = console.get(f"/console/executions/{first}").text
    assert "&#34;café &lt;b&gt;x&lt;/b&gt; &amp; &#39;q&#39;&#34;" in page
    assert "\\u00e9" not in page and "\\u003c" not in page
    compare = console.get("/console/executions/compare",
                          params=[("ids", first), ("ids", second)]).text
    assert "&#34;ü&#34;" in compare and "\\u00fc" not in compare


def test_upload_urls_come_from_the_api_service(console: Console, unique) -> None:
    response = console.http.post("/console/data-store/upload-url",
                                 json={"path": f"console/{unique}/x.bin"},
                                 headers={"x-csrf-token": console.csrf,
                                          "origin": console.url})
    assert response.status_code == 200 and "fields" in response.json()
    bad = console.http.post("/console/data-store/upload-url", json={"path": "../x"},
                            headers={"x-csrf-token": console.csrf, "origin": console.url})
    assert bad.status_code == 400 and bad.json()["message"]


def test_sdk_tokens_shown_once_and_revoked(console: Console, gristmill_env, unique) -> None:
    created = console.post("/console/settings/tokens",
                           {"name": f"t-{unique}", "expires_in_days": "3"})
    assert created.status_code == 200
    secret = re.search(r'<pre id="new-token">([^<]+)</pre>', created.text).group(1)
    assert httpx.post(f"{gristmill_env.url}/api/v1/auth/refresh",
                      json={"refresh_token": secret}).status_code == 200
    page = console.get("/console/settings").text
    assert f"t-{unique}" in page and secret not in page
    token_id = secret.split("_")[1]
    assert console.post(f"/console/settings/tokens/{token_id}/revoke").status_code == 303
    assert httpx.post(f"{gristmill_env.url}/api/v1/auth/refresh",
                      json={"refresh_token": secret}).status_code == 401
    bad = console.post("/console/settings/tokens", {"expires_in_days": "-1"})
    assert bad.status_code == 400


def test_a_token_expiry_beyond_ten_years_is_refused(console: Console, unique) -> None:
    def tokens_named(name: str) -> int:
        return console.get("/console/settings").text.count(f"<td>{name}</td>")

    # out of range for a date (an OverflowError, a 500, before), beyond the bound, or not
    # a number int() reads ('²' is a digit to str.isdigit)
    for days in ("99999999999999999999", "3000000", "3651", "²", "1" * 5000, "0"):
        name = f"far-{unique}"
        refused = console.post("/console/settings/tokens",
                               {"name": name, "expires_in_days": days})
        assert refused.status_code == 400, (days[:40], refused.text[:300])
        assert "from 1 to 3650" in refused.text
        assert tokens_named(name) == 0  # nothing created
    created = console.post("/console/settings/tokens",
                           {"name": f"decade-{unique}", "expires_in_days": "3650"})
    assert created.status_code == 200 and tokens_named(f"decade-{unique}") == 1
    assert 'max="3650"' in created.text  # the form says so before it is sent


def test_users_are_managed_by_admins_only(console: Console, gristmill_env, unique) -> None:
    email = f"console-{unique}@example.com"
    assert console.post("/console/settings/users",
                        {"name": "Someone", "email": email}).status_code == 303
    assert email in console.get("/console/settings").text
    duplicate = console.post("/console/settings/users", {"name": "Again", "email": email})
    assert duplicate.status_code == 409 and "already exists" in duplicate.text

    other = new_user_token(gristmill_env.settings, f"plain-{unique}@example.com")
    user_console = Console(gristmill_env.url, other.plaintext)
    refused = user_console.post("/console/settings/users",
                                {"name": "X", "email": f"x-{unique}@example.com"})
    assert refused.status_code == 403
    assert "Users" not in user_console.get("/console/settings").text.split("<h2>SDK tokens")[0]


def test_resource_metrics_csv_is_the_sdk_one(console: Console) -> None:
    from gristmill_platform.resources.shape import CSV_HEADER

    page = console.get("/console/monitoring/resource-metrics?range=15m")
    assert page.status_code == 200 and "Download CSV" in page.text
    csv = console.get("/console/monitoring/resource-metrics?range=15m&download=true")
    assert csv.status_code == 200
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0] == ",".join(CSV_HEADER)
    assert console.get("/console/monitoring/resource-metrics?range=nope").status_code == 200


def test_pipeline_metric_over_time(console: Console, gristmill_env, echo_pipeline) -> None:
    _run(gristmill_env, echo_pipeline, "metric")
    page = console.get(f"/console/monitoring/pipeline-metrics?name=score"
                       f"&pipeline={echo_pipeline}")
    assert page.status_code == 200
    chart = re.search(r'id="metric-chart" data-chart="([^"]+)"', page.text).group(1)
    import html
    import json

    spec = json.loads(html.unescape(chart))
    assert spec["series"][0]["label"] == "score"
    assert 6.0 in spec["series"][0]["values"]  # len("metric"), recorded by _run
    assert len(spec["x"]) == len(spec["series"][0]["values"])


def test_the_graph_fragment_is_refused_for_a_one_step_or_unknown_execution(
        console: Console, gristmill_env, echo_pipeline) -> None:
    execution_id = _run(gristmill_env, echo_pipeline, "one step")
    page = console.get(f"/console/executions/{execution_id}")
    assert 'id="execution-graph"' not in page.text  # one step: the page as before
    one = console.get(f"/console/executions/{execution_id}/graph")
    assert one.status_code == 400 and "has no graph" in one.text
    unknown = console.get("/console/executions/no-such-execution/graph")
    assert unknown.status_code == 404 and "no-such-execution" in unknown.text


def test_the_traffic_section_of_a_periodic_and_of_an_unknown_deployment(
        console: Console, gristmill_env, echo_pipeline, unique) -> None:
    name = f"console-yearly-{unique}"
    created = console.post(f"/console/pipelines/{echo_pipeline}/deploy",
                           {"name": name, "execution_rule": "periodic", "mode": "elastic",
                            "schedule": "0 0 1 1 *", "in.text.source": "constant",
                            "in.text.value": "x", "out.text.destination": "none"})
    assert created.status_code == 303, created.text
    page = console.get(f"/console/deployments/{name}")
    assert f'hx-get="/console/deployments/{name}/traffic"' in page.text
    section = console.get(f"/console/deployments/{name}/traffic")
    assert section.status_code == 200
    assert "traffic rules apply to endpoints" in section.text
    assert 'id="traffic-call"' not in section.text  # no rule to set on a periodic one
    assert "No execution to compare yet" in section.text
    unknown = console.get("/console/deployments/no-such-deployment/traffic")
    assert unknown.status_code == 404 and "no-such-deployment" in unknown.text
    signed_out = httpx.get(f"{gristmill_env.url}/console/deployments/{name}/traffic",
                           headers={"hx-request": "true"})
    assert signed_out.status_code == 401
    assert console.post(f"/console/deployments/{name}/delete").status_code == 303
