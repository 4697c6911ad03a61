"""The shadow runner runs on uvloop, as the control service does (uvicorn picks it), and
on asyncio's own loop where uvloop is not installed (executions/shadow_process.py)."""

from __future__ import annotations

import asyncio
import sys

import pytest
import uvloop

from gristmill_platform.executions.shadow_process import event_loop_factory


def test_the_runner_runs_on_uvloop() -> None:
    factory = event_loop_factory()
    assert factory is uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        assert isinstance(runner.get_loop(), uvloop.Loop)


def test_without_uvloop_asyncio_s_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert event_loop_factory() is None
    with asyncio.Runner(loop_factory=None) as runner:
        assert not isinstance(runner.get_loop(), uvloop.Loop)
