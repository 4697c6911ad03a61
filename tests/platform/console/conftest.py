"""A signed-in console client (httpx, as a browser would send requests) on the shared
environment, and a ready pipeline to show."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.platform.console.browserkit import CHROMIUM, FLAGS, Watched
from tests.platform.stepkit import archive_of, write_folder
from tests.platform.test_runs import STEP_CODE, make_pipeline

BROWSER = {"accept": "text/html,application/xhtml+xml"}


class Console:
    def __init__(self, url: str, sdk_token: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, headers=BROWSER, timeout=60)
        response = self.http.post("/console/sign-in", data={"token": sdk_token, "next": "/"})
        assert response.status_code == 303, response.text
        self.csrf = self.csrf_of(self.http.get("/").text)

    @staticmethod
    def csrf_of(page: str) -> str:
        match = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
        assert match, "no CSRF token in the page"
        return match.group(1)

    def get(self, path: str, params: list[tuple[str, str]] | None = None) -> httpx.Response:
        return self.http.get(path, params=params)

    def post(self, path: str, data: dict[str, str] | None = None,
             headers: dict[str, str] | None = None) -> httpx.Response:
        return self.http.post(path, data={"csrf_token": self.csrf, **(data or {})},
                              headers={"origin": self.url, **(headers or {})})

    def post_json(self, path: str, body: object) -> httpx.Response:
        """As the console's script posts: JSON, the CSRF token in its header."""
        return self.http.post(path, json=body,
                              headers={"origin": self.url, "X-CSRF-Token": self.csrf})


@pytest.fixture
def console(gristmill_env) -> Iterator[Console]:
    client = Console(gristmill_env.url, gristmill_env.sdk_token)
    try:
        yield client
    finally:
        client.http.close()


@pytest.fixture(scope="module")
def echo_pipeline(gristmill_env, tmp_path_factory, request) -> str:
    # one per test module (module scope), so each needs its own name
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_console_")
    archive = archive_of(write_folder(tmp_path_factory.mktemp("console-steps"),
                                      {"src/steps.py": STEP_CODE}))
    with gristmill_env.client() as api:
        return make_pipeline(api, archive, f"console-echo-{module}-{gristmill_env.database.kind}",
                             "echo_async", [{"name": "text", "data_type": "string"}],
                             [{"name": "text", "data_type": "string"}])


# -- the browser tests' fixtures (tests/platform/console/browserkit.py) ----------------------

@pytest.fixture(scope="module")
def env(gristmill_env) -> Any:
    if gristmill_env.database.kind != "sqlite":
        pytest.skip("browser tests run once, on SQLite")
    return gristmill_env


@pytest.fixture(scope="module")
def browser(env) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium, or scripts/setup.sh "
                    "as root): browser tests skipped")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright not installed: browser tests skipped")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def watched(browser, env) -> Iterator[Watched]:
    page = Watched(browser, env.url)
    page.sign_in(env.sdk_token)
    yield page
    page.close()
