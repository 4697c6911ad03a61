"""Multi-step pipelines and traffic rules in the console, in a real browser (Playwright
driving Debian's Chromium): the graph of a pipeline and of its runs (per-node status, live
while it runs, a failed node and what it skipped), a deployment's split and shadow rules
with their comparison, and the pipeline and deployment pages reached with the keyboard
only. No request leaves the server and no console error (browserkit.Watched).

Set GRISTMILL_CONSOLE_SCREENSHOTS=<folder> for the PNGs of docs/console.md."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.platform.console.browserkit import CHROMIUM, Watched, run_pipeline
from tests.platform.stepkit import archive_of, post_step, step_form, write_folder
from tests.platform.test_runs import make_pipeline

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium, or scripts/setup.sh as "
                "root): browser tests skipped", allow_module_level=True)
pytest.importorskip("playwright.sync_api",
                    reason="playwright not installed: browser tests skipped")

CODE = '''
import time


def split(text: str) -> dict:
    print(f"splitting {text!r}", flush=True)
    return {"words": text.split()}


def nap(words: list, seconds: float) -> dict:
    time.sleep(seconds)
    return {"n": len(words)}


def boom(words: list) -> dict:
    raise ValueError("no luck with " + " ".join(words))


def report(n: float, words: list, seconds: float) -> dict:
    time.sleep(seconds)
    return {"line": f"{n:g} words, first {words[0]}"}


def shout(text: str) -> dict:
    return {"text": text.upper()}


def whisper(text: str) -> dict:
    return {"text": text.lower()}


def crash(text: str) -> dict:
    raise RuntimeError("the challenger crashed")
'''

WORDS = [{"name": "words", "data_type": "array"}]
N = [{"name": "n", "data_type": "number"}]
SECONDS = {"name": "seconds", "data_type": "number"}
STEPS = {
    "split": ([{"name": "text", "data_type": "string"}], WORDS),
    "nap": ([*WORDS, SECONDS], N),
    "boom": (WORDS, N),
    "report": ([*N, *WORDS, SECONDS], [{"name": "line", "data_type": "string"}]),
}
TEXT = [{"name": "text", "data_type": "string"}]
STAMP = int(time.time() * 1000) % 10**8


def node(name: str, step: str, **inputs: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "step_name": step, "inputs": inputs}


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> bytes:
    return archive_of(write_folder(tmp_path_factory.mktemp("console-graphs"),
                                   {"src/steps.py": CODE}))


@pytest.fixture(scope="module")
def graphs(env, archive) -> dict[str, str]:
    """Two 3-node pipelines, as tests/platform/test_pipeline_graphs.py creates them over
    REST: split → nap → report (report also reads split) and split → boom → report."""
    with env.client() as api:
        steps = {}
        for function, (inputs, outputs) in STEPS.items():
            name = f"cg-{function}-{STAMP}"
            response = post_step(api, step_form(name, function_path="src/steps.py",
                                                function_name=function, inputs=inputs,
                                                outputs=outputs), archive)
            assert response.status_code == 201, response.text
            steps[function] = name
        words = {"node": "split", "output": "words"}
        shapes = {
            "ok": [node("split", steps["split"], text={"pipeline_input": "text"}),
                   node("nap", steps["nap"], words=words,
                        seconds={"pipeline_input": "seconds"}),
                   node("report", steps["report"], n={"node": "nap", "output": "n"},
                        words=words, seconds={"pipeline_input": "seconds"})],
            "failing": [node("split", steps["split"], text={"pipeline_input": "text"}),
                        node("boom", steps["boom"], words=words),
                        node("report", steps["report"], n={"node": "boom", "output": "n"},
                             words=words, seconds={"constant": 0})],
        }
        names = {}
        for shape, nodes in shapes.items():
            name = f"graph-{shape}-{STAMP}"
            response = api.post("/pipelines", json={
                "pipeline_name": name, "nodes": nodes,
                "outputs": [{"name": "line", "node": "report", "output": "line"}]})
            assert response.status_code == 201, response.text
            names[shape] = name
    return names


def _statuses(page: Any) -> dict[str, str]:
    return page.eval_on_selector_all(
        "#execution-graph [data-node]",
        "nodes => Object.fromEntries(nodes.map(n => [n.dataset.node, n.dataset.status]))")


def test_a_graph_run_shows_each_node_live_then_its_times_and_logs(watched: Watched, env,
                                                                  graphs) -> None:
    page = watched.page
    page.goto(env.url + f"/console/pipelines/{graphs['ok']}")
    # the pipeline's graph: its three nodes and the three wires between them
    assert page.locator("#pipeline-graph [data-node]").count() == 3
    edges = page.eval_on_selector_all("#pipeline-graph path.edge",
                                      "paths => paths.map(p => p.dataset.edge).sort()")
    assert edges == ["nap-report", "split-nap", "split-report"]
    assert "step cg-nap" in page.locator("[data-node=nap]").inner_text()
    # drawn left to right: split, then nap, then report
    xs = [page.locator(f"#pipeline-graph [data-node={n}]").bounding_box()["x"]
          for n in ("split", "nap", "report")]
    assert xs[0] < xs[1] < xs[2]
    watched.shot("pipeline-graph")

    execution_id = run_pipeline(env, graphs["ok"], {"text": "graphs in a browser", "seconds": 3},
                        wait=False)
    page.goto(env.url + f"/console/executions/{execution_id}")
    url = page.url
    page.evaluate("window.__sameDocument = true")
    # while the execution runs, node statuses change without a reload: nap succeeded while
    # report (3 s) still runs, on the page loaded before
    page.wait_for_function(
        """() => {
            const s = n => document.querySelector(`#execution-graph [data-node=${n}]`)
                ?.dataset.status;
            return s('nap') === 'succeeded' && ['pending', 'running'].includes(s('report'));
        }""", timeout=90_000)
    assert page.evaluate("window.__sameDocument === true") and page.url == url
    assert _statuses(page)["split"] == "succeeded"
    watched.shot("execution-graph")
    # when it ends the page reloads once, with the outputs and every node's times
    page.wait_for_selector("h1 .status-succeeded", timeout=90_000)
    assert _statuses(page) == {"split": "succeeded", "nap": "succeeded",
                               "report": "succeeded"}
    assert page.locator("#execution-graph [hx-get]").count() == 0  # no more polling
    nap = page.locator("#execution-graph [data-node=nap]").inner_text()
    assert "→" in nap and " s" in nap  # start → end · duration
    outputs = page.locator("section.card:has(h2:text-is('Outputs'))").inner_text()
    assert "4 words, first graphs" in outputs, outputs
    # each node links to its own execution and its logs
    page.click("#execution-graph [aria-label='Logs of node split']")
    page.wait_for_selector("#logs >> text=splitting 'graphs in a browser'")
    assert "split of execution" in page.locator("dl.kv").inner_text()


def test_a_failed_node_is_shown_failed_and_what_follows_skipped(watched: Watched, env,
                                                                graphs) -> None:
    execution_id = run_pipeline(env, graphs["failing"], {"text": "no luck"}, wait=True)
    page = watched.page
    page.goto(env.url + f"/console/executions/{execution_id}")
    page.wait_for_selector("h1 .status-failed")
    assert _statuses(page) == {"split": "succeeded", "boom": "failed", "report": "skipped"}
    assert "no luck with no luck" in page.locator("[role=alert]").inner_text()
    report = page.locator("#execution-graph [data-node=report]")
    assert "an upstream node did not succeed" in report.inner_text()
    assert report.locator("a").count() == 0  # never ran: no execution, no logs
    failed_edge = page.locator("#execution-graph path[data-edge=boom-report]")
    assert "edge-failed" in (failed_edge.get_attribute("class") or "")
    watched.shot("execution-graph-failed")


# -- traffic rules -----------------------------------------------------------------------------

def _endpoint(api: httpx.Client, pipeline: str, name: str) -> str:
    response = api.post("/endpoints", json={"pipeline_name": pipeline, "name": name,
                                            "mode": "elastic"})
    assert response.status_code == 201, response.text
    return str(response.json()["endpoint_token"])


def _call(env, name: str, token: str, text: str) -> str:
    response = httpx.post(f"{env.url}/endpoints/{name}", json={"text": text}, timeout=120,
                          headers={"Authorization": f"EndpointToken {token}"},
                          follow_redirects=True)
    assert response.status_code == 200, response.text
    return response.headers["x-gristmill-pipeline"]


@pytest.fixture(scope="module")
def rollout(env, archive) -> dict[str, str]:
    """A deployment split 1:1 between two pipelines, with a validation some calls break,
    and one whose calls are shadowed by a crashing pipeline."""
    with env.client() as api:
        shout = make_pipeline(api, archive, f"shout-{STAMP}", "shout", TEXT, TEXT)
        whisper = make_pipeline(api, archive, f"whisper-{STAMP}", "whisper", TEXT, TEXT)
        crash = make_pipeline(api, archive, f"crash-{STAMP}", "crash", TEXT, TEXT)
        split, shadow = f"split-{STAMP}", f"shadow-{STAMP}"
        split_token = _endpoint(api, shout, split)
        shadow_token = _endpoint(api, shout, shadow)
        for name, rule in ((split, {"split": {shout: 1, whisper: 1}}),
                           (shadow, {"shadow": [crash]})):
            response = api.put(f"/deployments/{name}/traffic", json=rule)
            assert response.status_code == 200, response.text
        response = api.put(f"/deployments/{split}/validations",
                           json={"short": "len(text) <= 4"})
        assert response.status_code == 200, response.text
        # until both pipelines answered (random by weight), a long text each second call
        answered: set[str] = set()
        for call in range(16):
            answered.add(_call(env, split, split_token, "hello there" if call % 2 else "hi"))
            if len(answered) == 2 and call >= 3:
                break
        assert answered == {shout, whisper}
        for text in ("one", "two"):
            assert _call(env, shadow, shadow_token, text) == shout
        # shadow copies run beside the calls: wait until both ended
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            comparison = api.get(f"/deployments/{shadow}").json()["traffic"]["comparison"]
            if any(v["shadow"] and v["ended"] == 2 for v in comparison):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the shadow copies did not end: {comparison}")
    return {"split": split, "shadow": shadow, "shout": shout, "whisper": whisper,
            "crash": crash}


def test_deployments_show_their_split_and_shadow_rules_and_comparison(
        watched: Watched, env, rollout) -> None:
    page = watched.page
    page.goto(env.url + f"/console/deployments/{rollout['split']}")
    # the section comes after the page (htmx), with no reload
    page.wait_for_selector("#traffic-rule")
    rule = page.locator("#traffic-rule").inner_text()
    assert "Random split" in rule
    assert f"{rollout['shout']}\n" in rule or f"{rollout['shout']} (own)" in rule
    assert rule.count("50 %") == 2
    call = page.locator("#traffic-call").inner_text()
    assert call == (f'sdk.set_deployment_traffic("{rollout["split"]}", split='
                    f'{{"{rollout["shout"]}": 1, "{rollout["whisper"]}": 1}})')
    validations = page.locator("#traffic-validations").inner_text()
    assert "len(text) <= 4" in validations
    with env.client() as api:
        read = api.get(f"/deployments/{rollout['split']}").json()["traffic"]
    failures = read["validation_counts"]["short"]
    assert failures >= 1
    assert page.locator("#traffic-validations td.over").inner_text() == str(failures)
    # the comparison: a row per pipeline that answered, with the figures of the API's read
    rows = page.locator("#traffic-comparison tbody tr")
    assert rows.count() == 2
    for variant in read["comparison"]:
        row = page.locator(f"#traffic-comparison tr[data-pipeline='{variant['pipeline_name']}']")
        cells = row.locator("td").all_inner_texts()
        assert cells[2] == str(variant["calls"])
        assert cells[4] == "0.0 %"
        assert cells[5] == f"{variant['latency_ms_p50']:g} ms"
        assert cells[6] == f"{variant['latency_ms_p95']:g} ms"
    # the rule and the validations were set by the signed-in user: the latest changes say so
    email = page.locator(".who").inner_text().split("<")[1].split(">")[0]
    changes = page.locator("#traffic details tbody tr").all_text_contents()
    assert len(changes) == 2 and all(email in c for c in changes)
    assert "validations" in changes[0] and "traffic" in changes[1]  # newest first
    watched.shot("deployment-traffic", "#traffic")

    page.goto(env.url + f"/console/deployments/{rollout['shadow']}")
    rule = page.locator("#traffic-rule").inner_text()
    assert "Shadow" in rule and rollout["crash"] in page.locator(".shadow-list").inner_text()
    shadow_row = page.locator(f"#traffic-comparison tr[data-shadow=true]"
                              f"[data-pipeline='{rollout['crash']}']")
    cells = shadow_row.locator("td").all_inner_texts()
    assert cells[1] == "shadow copy" and cells[2] == "2" and cells[4] == "100.0 %"
    own = page.locator(f"#traffic-comparison tr[data-shadow=false]"
                       f"[data-pipeline='{rollout['shout']}'] td").all_inner_texts()
    assert own[1] == "own pipeline" and own[4] == "0.0 %"


def test_a_deployment_without_a_rule_says_its_own_pipeline_answers(watched: Watched, env,
                                                                   rollout) -> None:
    name = f"plain-{STAMP}"
    with env.client() as api:
        _endpoint(api, rollout["shout"], name)
    page = watched.page
    page.goto(env.url + f"/console/deployments/{name}")
    assert ("No rule: the deployment's own pipeline " f"{rollout['shout']} answers every call"
            in page.locator("#traffic-rule").inner_text())
    assert page.locator("#traffic-call").inner_text() == f'sdk.set_deployment_traffic("{name}")'
    assert "No execution to compare yet" in page.locator("#traffic").inner_text()


# -- the keyboard alone ------------------------------------------------------------------------

def _tab_to(page: Any, matches: str, limit: int = 400) -> None:
    """Press Tab until the focused element satisfies ``matches`` (a JS predicate on el),
    checking on the way that every focused element shows its focus."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = page.evaluate(f"""() => {{
            const el = document.activeElement;
            const style = getComputedStyle(el);
            return {{hit: ({matches})(el), tag: el.tagName, text: el.innerText || el.value,
                     visible: el.matches(':focus-visible') && style.outlineStyle !== 'none'
                              && parseFloat(style.outlineWidth) >= 2}};
        }}""")
        if focused["tag"] == "BODY":
            continue
        assert focused["visible"], f"no visible focus on {focused}"
        if focused["hit"]:
            return
    raise AssertionError(f"Tab never reached {matches}")


def test_sign_in_then_a_pipeline_and_a_deployment_by_keyboard_only(browser, env, graphs,
                                                                   rollout) -> None:
    watched = Watched(browser, env.url)
    page = watched.page
    page.goto(env.url + "/console/pipelines")
    assert "/console/sign-in" in page.url
    _tab_to(page, "el => el.id === 'token'")
    page.keyboard.type(env.sdk_token)
    page.keyboard.press("Enter")
    page.wait_for_url(env.url + "/console/pipelines")
    listed = page.locator(f"tr:has(a:text-is('{graphs['ok']}'))").inner_text()
    assert "graph · 3 nodes" in listed

    _tab_to(page, f"el => el.tagName === 'A' && el.innerText === {json.dumps(graphs['ok'])}")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/console/pipelines/{graphs['ok']}")
    assert page.locator("h1").inner_text() == f"Pipeline {graphs['ok']}"
    assert page.locator("#pipeline-graph [data-node]").count() == 3

    _tab_to(page, "el => el.tagName === 'A' && el.innerText === 'Deployments'")
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/deployments")
    _tab_to(page, f"el => el.tagName === 'A' && el.innerText === {json.dumps(rollout['split'])}")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/console/deployments/{rollout['split']}")
    page.wait_for_selector("#traffic-rule")
    assert "Random split" in page.locator("#traffic-rule").inner_text()
    # and on to the answering pipeline of the rule, still by keyboard
    _tab_to(page, "el => el.closest('#traffic-rule') && el.tagName === 'A' && "
                  f"el.innerText === {json.dumps(rollout['whisper'])}")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/console/pipelines/{rollout['whisper']}")
    watched.close()


def test_every_page_shows_where_the_keyboard_focus_is(watched: Watched, env, graphs,
                                                     rollout) -> None:
    """Tab through each page of the navigation and the pipeline, execution and deployment
    pages: every control is reached in turn and shows a visible focus ring."""
    page = watched.page
    with env.client() as api:
        execution_id = api.get(f"/pipelines/{graphs['failing']}/executions").json()
    pages = ["/", "/console/pipelines", "/console/deployments", "/console/executions",
             "/console/monitoring/pipeline-metrics", "/console/monitoring/resource-metrics",
             "/console/data-store", "/console/environment-variables", "/console/settings",
             f"/console/pipelines/{graphs['ok']}", f"/console/pipelines/{graphs['ok']}/deploy",
             f"/console/deployments/{rollout['split']}"]
    if execution_id:
        pages.append(f"/console/executions/{execution_id[0]['execution_id']}")
    for path in pages:
        page.goto(env.url + path)
        page.wait_for_load_state("networkidle")  # sections htmx loads after the page
        seen: list[str] = []
        for _ in range(150):
            page.keyboard.press("Tab")
            focused = page.evaluate("""() => {
                const el = document.activeElement;
                const style = getComputedStyle(el);
                return {tag: el.tagName, what: (el.id || el.getAttribute('href') || el.name
                                                || el.innerText || '').slice(0, 60),
                        visible: style.outlineStyle !== 'none'
                                 && parseFloat(style.outlineWidth) >= 2};
            }""")
            if focused["tag"] == "BODY":
                break
            assert focused["visible"], f"{path}: no visible focus on {focused}"
            seen.append(focused["what"])
        assert "#main" in seen[0], f"{path}: the skip link comes first ({seen[:3]})"
        assert "Sign out" in seen, f"{path}: {seen}"
