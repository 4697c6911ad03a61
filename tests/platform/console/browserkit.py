"""What the browser tests share: Debian's Chromium with the flags that work here, and a
page that refuses and records any request to another host and keeps its console errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# GRISTMILL_CONSOLE_SCREENSHOTS=<folder>: each test saves PNGs of its pages (docs/console.md)
SCREENSHOTS = os.environ.get("GRISTMILL_CONSOLE_SCREENSHOTS")


class Watched:
    """A page whose requests to any other host are refused and recorded, and whose console
    errors are kept, so each test can assert there were none."""

    def __init__(self, browser: Any, url: str) -> None:
        self.host = urlsplit(url).netloc
        self.url = url
        self.context = browser.new_context(viewport={"width": 1280, "height": 860},
                                           accept_downloads=True)
        self.foreign: list[str] = []
        self.errors: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.set_default_timeout(20_000)

    def _route(self, route: Any) -> None:
        if urlsplit(route.request.url).netloc != self.host:
            self.foreign.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    def sign_in(self, token: str) -> None:
        self.page.goto(self.url + "/")
        assert "/console/sign-in" in self.page.url
        self.page.fill("#token", token)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(self.url + "/")

    def shot(self, name: str, selector: str | None = None) -> None:
        """A PNG of the viewport, or of one element (``selector``)."""
        if SCREENSHOTS:
            Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
            path = str(Path(SCREENSHOTS) / f"{name}.png")
            if selector:
                self.page.locator(selector).screenshot(path=path)
            else:
                self.page.screenshot(path=path)

    def close(self) -> None:
        self.context.close()
        assert self.foreign == [], f"requests left the server: {self.foreign}"
        # a 4xx the test provoked on purpose logs "Failed to load resource"; nothing else may
        assert [e for e in self.errors if "Failed to load resource" not in e] == []


def run_pipeline(env: Any, pipeline: str, inputs: dict[str, Any], *, wait: bool = True
                 ) -> str:
    """Run a pipeline through the API; with ``wait``, until its outputs are ready."""
    from tests.platform.test_runs import run
    from tests.platform.test_runs import wait as wait_for_outputs

    with env.client() as api:
        response = run(api, pipeline, inputs)
        assert response.status_code == 201, response.text
        execution_id = str(response.json()["execution_id"])
        if wait:
            wait_for_outputs(api, execution_id)
    return execution_id
