"""The console in a real browser (Playwright driving Debian's Chromium): sign-in/out, every
page, the Deploy form, token rotation, live logs, compare, data store upload/download,
environment variables, CSRF, and that the page never asks any host but the server.

One browser for the module; SQLite only (the HTTP tests cover both databases).
Set GRISTMILL_CONSOLE_SCREENSHOTS=<folder> to save a PNG of each page (docs/console.md)."""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.platform.console.browserkit import CHROMIUM, Watched, run_pipeline
from tests.platform.helpers import run_admin
from tests.platform.stepkit import archive_of, write_folder
from tests.platform.test_runs import STEP_CODE, make_pipeline

TICKS = '''
import time


def ticks(count: int) -> dict:
    for i in range(int(count)):
        print(f"tick {i}", flush=True)
        time.sleep(0.5)
    return {"done": int(count)}
'''

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium, or scripts/setup.sh as "
                "root): browser tests skipped", allow_module_level=True)
pytest.importorskip("playwright.sync_api",
                    reason="playwright not installed: browser tests skipped")


@pytest.fixture(scope="module")
def pipelines(env, tmp_path_factory) -> dict[str, str]:
    archive = archive_of(write_folder(tmp_path_factory.mktemp("browser-steps"),
                                      {"src/steps.py": STEP_CODE + TICKS}))
    with env.client() as api:
        echo = make_pipeline(api, archive, "browser-echo", "echo_async",
                             [{"name": "text", "data_type": "string"}],
                             [{"name": "text", "data_type": "string"}])
        ticks = make_pipeline(api, archive, "browser-ticks", "ticks",
                              [{"name": "count", "data_type": "number"}],
                              [{"name": "done", "data_type": "number"}])
    return {"echo": echo, "ticks": ticks}


def test_every_page_from_the_navigation_then_sign_out(watched: Watched, env, pipelines
                                                      ) -> None:
    page = watched.page
    run_pipeline(env, pipelines["echo"], {"text": "nav"})
    watched.shot("home")
    for label, shot in (("Pipelines", "pipelines"), ("Deployments", "deployments"),
                        ("Execution tracking", "executions"),
                        ("Pipeline metrics", "pipeline-metrics"),
                        ("Resource metrics", "resource-metrics"), ("Data store", "data-store"),
                        ("Environment variables", "environment-variables"),
                        ("Settings", "settings")):
        page.click(f"nav.side >> text={label}")
        page.wait_for_load_state("load")
        assert page.locator("h1").first.inner_text().startswith(label.split(" ")[0].title()
                                                                if label != "Execution tracking"
                                                                else "Execution"), label
        assert page.locator("nav.side [aria-current=page]").inner_text() == label
        watched.shot(shot)
    page.goto(env.url + f"/console/pipelines/{pipelines['echo']}")
    assert page.locator("h1").inner_text() == f"Pipeline {pipelines['echo']}"
    watched.shot("pipeline")
    page.goto(env.url + "/docs")
    page.wait_for_selector(".swagger-ui .info", timeout=30_000)
    assert "Gristmill" in page.locator(".swagger-ui .info").inner_text()
    page.goto(env.url + "/")
    page.click("text=Sign out")
    page.wait_for_url(re.compile(r".*/console/sign-in$"))
    page.goto(env.url + "/console/settings")
    assert "/console/sign-in" in page.url


def test_signed_out_browser_is_sent_to_sign_in(browser, env) -> None:
    watched = Watched(browser, env.url)
    watched.page.goto(env.url + "/console/environment-variables")
    assert "/console/sign-in?next=" in watched.page.url
    watched.shot("sign-in")
    watched.page.fill("#token", "gm_wrong_token")
    watched.page.click("button[type=submit]")
    assert "Invalid refresh token" in watched.page.locator(".error").inner_text()
    watched.page.fill("#token", env.sdk_token)
    watched.page.click("button[type=submit]")
    watched.page.wait_for_url(env.url + "/console/environment-variables")
    watched.close()


def test_deploy_form_endpoint_answers_and_token_rotation(watched: Watched, env, pipelines
                                                         ) -> None:
    page = watched.page
    name = f"browser-ep-{int(time.time() * 1000) % 10**8}"
    page.goto(env.url + f"/console/pipelines/{pipelines['echo']}")
    page.click("main a.button.primary:text-is('Deploy')")
    page.wait_for_url(re.compile(r".*/deploy$"))
    page.wait_for_load_state("load")  # htmx wired up before typing
    page.fill("#d-name", name)
    page.fill("#d-schedule", "*/15 * * * *")
    page.wait_for_selector("#cron-preview >> text=Every 15 minutes")
    watched.shot("deploy")
    page.fill("#d-schedule", "")
    page.click("#deploy-form button[type=submit]")
    page.wait_for_url(re.compile(rf".*/console/deployments/{name}\?created=1$"))
    page.click("#endpoint-token >> text=Reveal")
    token = page.locator("#token-value").inner_text()
    answer = httpx.post(f"{env.url}/endpoints/{name}", json={"text": "web"},
                        headers={"Authorization": f"EndpointToken {token}"}, timeout=120,
                        follow_redirects=True)
    assert answer.json()["outputs"]["text"] == "WEB"
    page.reload()
    watched.shot("deployment")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("text=Rotate token")
    page.wait_for_selector("text=A new token was generated")
    rotated = page.locator("#token-value").inner_text()
    assert rotated != token
    old = httpx.post(f"{env.url}/endpoints/{name}", json={"text": "x"},
                     headers={"Authorization": f"EndpointToken {token}"})
    assert old.status_code in (401, 403)


def test_live_logs_of_a_running_execution(watched: Watched, env, pipelines) -> None:
    execution_id = run_pipeline(env, pipelines["ticks"], {"count": 12}, wait=False)
    page = watched.page
    page.goto(env.url + f"/console/executions/{execution_id}")
    url = page.url
    # lines printed after the page loaded arrive without a reload
    page.wait_for_selector("#logs >> text=tick 1", timeout=60_000)
    page.wait_for_selector("#logs >> text=tick 6", timeout=60_000)
    watched.shot("execution")
    assert page.url == url
    page.wait_for_selector("#logs >> text=tick 11", timeout=60_000)
    # once it ends the page reloads by itself with the outputs and the final status
    page.wait_for_selector("h1 .status-succeeded", timeout=60_000)
    assert page.locator("text=12").count() >= 1


def test_a_long_value_without_spaces_wraps_instead_of_widening_the_page(
        watched: Watched, env, pipelines) -> None:
    """Users' text (inputs, outputs, names) may hold a long word: it wraps in its cell."""
    long = "x" * 3000
    execution_id = run_pipeline(env, pipelines["echo"], {"text": long})
    page = watched.page
    page.set_viewport_size({"width": 1280, "height": 900})
    for path in (f"/console/executions/{execution_id}",
                 f"/console/executions/compare?ids={execution_id}&ids={execution_id}"):
        page.goto(env.url + path)
        page.wait_for_selector("table")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 1280, (path, width)


def test_select_two_executions_and_compare(watched: Watched, env, pipelines) -> None:
    first = run_pipeline(env, pipelines["echo"], {"text": "left"})
    second = run_pipeline(env, pipelines["echo"], {"text": "right"})
    with env.client() as api:
        for execution_id, values in ((first, [0.9, 0.5, 0.2]), (second, [0.8, 0.6, 0.4, 0.1])):
            api.post("/metrics/list-values/loss", json={
                "values": values, "execution_id": execution_id}).raise_for_status()
    page = watched.page
    page.goto(env.url + f"/console/executions?pipeline={pipelines['echo']}")
    page.check(f"input[value='{first}']")
    page.check(f"input[value='{second}']")
    page.click("text=Compare selected")
    page.wait_for_url(re.compile(r".*/console/executions/compare\?.*"))
    table = page.locator("table.compare").inner_text()
    assert "LEFT" in table and "RIGHT" in table
    # the list metric overlaid: one uPlot chart, a series per execution
    page.wait_for_selector(".chart .uplot canvas")
    legend = page.locator(".chart .u-legend").inner_text()
    assert first in legend and second in legend
    watched.shot("compare")


def test_data_store_upload_with_progress_and_download(watched: Watched, env,
                                                      tmp_path: Path) -> None:
    page = watched.page
    prefix = f"browser-{int(time.time() * 1000) % 10**8}/"
    local = tmp_path / "notes.txt"
    local.write_bytes(b"uploaded from the browser\n" * 1000)
    page.goto(env.url + f"/console/data-store?prefix={prefix}")
    page.set_input_files("#upload-input", str(local))
    page.wait_for_selector(f"text=Uploaded {prefix}notes.txt")
    page.wait_for_selector("#objects >> text=notes.txt")
    assert page.locator("progress").get_attribute("max") == str(local.stat().st_size)
    with page.expect_download() as download:
        page.click("#objects >> text=Download")
    saved = tmp_path / "downloaded.txt"
    download.value.save_as(saved)
    assert saved.read_bytes() == local.read_bytes()


def test_a_large_file_goes_up_in_multipart_parts(watched: Watched, env,
                                                 tmp_path: Path) -> None:
    page = watched.page
    prefix = f"browser-mp-{int(time.time() * 1000) % 10**8}/"
    local = tmp_path / "big.bin"
    local.write_bytes(os.urandom(300 * 1024))
    page.goto(env.url + f"/console/data-store?prefix={prefix}")
    # parts of 64 KiB instead of 16 MiB: the same path a file over 16 MiB takes
    page.eval_on_selector("[data-upload]", "z => z.setAttribute('data-part-size', '65536')")
    sent: list[str] = []
    page.on("request", lambda r: sent.append(f"{r.method} {urlsplit(r.url).path}"))
    page.set_input_files("#upload-input", str(local))
    page.wait_for_selector(f"text=Uploaded {prefix}big.bin")
    assert sent.count("POST /console/data-store/multipart/part") == 5
    assert "POST /console/data-store/multipart/end" in sent
    downloaded = httpx.get(f"{env.url}/console/data-store/object",
                           params={"path": f"{prefix}big.bin"},
                           cookies={c["name"]: c["value"] for c in watched.context.cookies()})
    assert downloaded.content == local.read_bytes()


def test_environment_variable_create_reveal_edit(watched: Watched, env) -> None:
    page = watched.page
    name = f"BROWSER_{int(time.time() * 1000) % 10**8}"
    page.goto(env.url + "/console/environment-variables")
    page.fill("#new-name", name)
    page.fill("#new-value", "first")
    page.click("#new-var button[type=submit]")
    page.wait_for_selector(f"text=Saved {name}")
    row = page.locator(f"#var-{name}")
    assert "first" not in row.inner_text()
    row.locator("text=Reveal").click()
    page.wait_for_selector(f"#value-{name} >> text=first")
    row.locator("summary").click()
    row.locator("input[name=value]").fill("second")
    row.locator("button:has-text('Save')").click()
    page.wait_for_selector(f"text=Saved {name}")
    page.locator(f"#var-{name} >> text=Reveal").click()
    page.wait_for_selector(f"#value-{name} >> text=second")


def test_a_post_without_the_csrf_token_is_refused_in_the_browser(watched: Watched, env
                                                                  ) -> None:
    page = watched.page
    page.goto(env.url + "/console/environment-variables")
    status = page.evaluate("""async () => {
        const body = new URLSearchParams({name: "NO_CSRF", value: "1"});
        const r = await fetch("/console/environment-variables", {method: "POST", body});
        return r.status;
    }""")
    assert status == 403
    page.reload()
    assert "NO_CSRF" not in page.content()


def test_a_viewer_sees_the_pages_without_what_they_may_not_change(browser, env) -> None:
    email = f"browser-viewer-{int(time.time() * 1000) % 10**8}@example.com"
    # in a thread: Playwright's sync API keeps an event loop running in this one
    with ThreadPoolExecutor(1) as admin:
        admin.submit(run_admin, env.settings, "create_user", "Vic Viewer", email,
                     is_viewer=True).result()
        token = admin.submit(run_admin, env.settings, "create_token", email,
                             name="browser").result().plaintext
    prefix = f"browser-viewer-{int(time.time() * 1000) % 10**8}/"
    with env.client() as api:
        signed = api.get("/data-store/upload", params={"path_to_object": f"{prefix}a.csv"})
        httpx.post(signed.json()["signed_url"], data=signed.json()["fields"],
                   files={"file": ("a.csv", b"x,y\n1,2\n")}).raise_for_status()
        api.put("/environment-variables",
                json={"environment_variables": {"VIEWER_SEES_NAME": "not the value"}}
                ).raise_for_status()
    viewer = Watched(browser, env.url)
    try:
        viewer.sign_in(token)
        page = viewer.page
        page.goto(env.url + f"/console/data-store?prefix={prefix}")
        page.wait_for_selector("#objects >> text=a.csv")
        assert page.locator("[data-upload]").count() == 0
        assert page.locator("#objects >> text=Delete").count() == 0
        assert page.locator("#objects >> text=Download").count() == 1
        assert "viewer, read only" in page.locator(".who").inner_text()
        viewer.shot("data-store-viewer")
        page.goto(env.url + "/console/environment-variables")
        row = page.locator("#var-VIEWER_SEES_NAME")
        assert "hidden" in row.inner_text()
        assert row.locator("text=Reveal").count() == 0
        assert page.locator("#new-var").count() == 0
        assert "not the value" not in page.content()
    finally:
        viewer.close()
