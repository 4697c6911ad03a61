"""`gristmill up` with the warm call's phases timed: bench/warm_phases.py starts the control
service as ``python -m _phases_serve up ...`` (bench/ on PYTHONPATH) instead of
``python -m gristmill.cli up ...``.

Before the service starts, the functions a fast-path call (deployments/fast_path.py) goes
through are wrapped, in this process only, so that each call notes when it enters and
leaves them; the product's code is not changed. A call's notes are kept in a context
variable set when the fast path takes the call: the execution's task (low_latency.py)
starts from a copy of the request's context and writes to the same list. Every
FLUSH_EVERY calls, and at exit, the calls' notes are appended to the JSON Lines file
named by GRISTMILL_PHASES_OUT, one call per line: {"start": the perf_counter() of its
first note, "notes": [[event, seconds since then], ...]} (perf_counter is the system's
monotonic clock: the bench compares it with its own, to see how much of a call's time
the client measured was spent before the first note and after the last). What the
wrappers cost themselves (about a microsecond each, twenty-odd per call) is in the
figures: they are a breakdown, not the endpoint's latency (the bench reports that from an
environment without them).

The service's background work is noted too, whoever runs it (the event loop or a thread of
the service): each stretch of it as [what, start, end] on the system's monotonic clock,
written to GRISTMILL_PHASES_OUT + ".background" at exit, so that the bench can tell which
of it the slowest calls overlapped: the journal's batches (their rows converted on the
loop, their statements on its thread), SQLite's checkpoints, the snapshots' reloads, and
the garbage collector's passes."""

from __future__ import annotations

import atexit
import contextvars
import functools
import inspect
import json
import os
import runpy
import time
from collections.abc import Callable
from typing import Any

FLUSH_EVERY = 500
Notes = list[tuple[str, float]]

_notes: contextvars.ContextVar[Notes | None] = contextvars.ContextVar("phase_notes",
                                                                     default=None)
_ended: list[Notes] = []
_background: list[tuple[str, float, float]] = []
_collecting: list[float] = []


def note(event: str) -> None:
    notes = _notes.get()
    if notes is not None:
        notes.append((event, time.perf_counter()))


def flush() -> None:
    path = os.environ.get("GRISTMILL_PHASES_OUT")
    if not path or not _ended:
        return
    with open(path, "a", encoding="utf-8") as out:
        for notes in _ended:
            start = notes[0][1]
            out.write(json.dumps({"start": start, "notes": [[event, round(at - start, 7)]
                                                            for event, at in notes]}) + "\n")
    _ended.clear()


def collection(phase: str, info: dict[str, Any]) -> None:
    """gc.callbacks: a pass of the collector, from its start to its stop."""
    if phase == "start":
        _collecting.append(time.perf_counter())
    elif _collecting:
        _background.append((f"gc generation {info.get('generation')}", _collecting.pop(),
                            time.perf_counter()))


def flush_background() -> None:
    path = os.environ.get("GRISTMILL_PHASES_OUT")
    if path and _background:
        with open(f"{path}.background", "a", encoding="utf-8") as out:
            out.writelines(json.dumps(stretch) + "\n" for stretch in _background)
        _background.clear()


def _around(function: Callable[..., Any], enter: Callable[[], Any],
            leave: Callable[[Any], None]) -> Callable[..., Any]:
    """function (sync or async), calling enter() before each run and leave(what enter
    gave) after it, whether it returns or raises."""
    if inspect.iscoroutinefunction(function):
        @functools.wraps(function)
        async def around_async(*args: Any, **kwargs: Any) -> Any:
            entered = enter()
            try:
                return await function(*args, **kwargs)
            finally:
                leave(entered)
        return around_async

    @functools.wraps(function)
    def around_sync(*args: Any, **kwargs: Any) -> Any:
        entered = enter()
        try:
            return function(*args, **kwargs)
        finally:
            leave(entered)
    return around_sync


def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """function, noting name+ when it is entered and name- when it returns or raises."""
    return _around(function, lambda: note(f"{name}+"), lambda _: note(f"{name}-"))


def background(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """function, noting [name, start, end] of each run of it, in or out of a call."""
    return _around(function, time.perf_counter,
                   lambda start: _background.append((name, start, time.perf_counter())))


def call_root(function: Callable[..., Any]) -> Callable[..., Any]:
    """The fast path's _answer: a new list of notes for the call, kept once it is sent."""
    @functools.wraps(function)
    async def root(*args: Any, **kwargs: Any) -> Any:
        notes: Notes = [("call+", time.perf_counter())]
        token = _notes.set(notes)
        try:
            return await function(*args, **kwargs)
        finally:
            notes.append(("call-", time.perf_counter()))
            _notes.reset(token)
            _ended.append(notes)
            if len(_ended) >= FLUSH_EVERY:
                flush()
    return root


def install() -> int:
    """Wrap the fast path's steps where they are looked up (a name imported with `from`
    is wrapped in the module that calls it), and the background work; how many functions
    were wrapped. A step renamed in the product fails here (AttributeError), instead of
    silently dropping its phase."""
    import gc

    from gristmill_platform.db import wal_checkpoints
    from gristmill_platform.deployments import directory, fast_path, gateway
    from gristmill_platform.env_vars import snapshot
    from gristmill_platform.executions import journal, journal_writes, low_latency
    from gristmill_platform.executors import local_workers, worker_client

    fast_path.EndpointFastPath._answer = call_root(  # type: ignore[method-assign]
        fast_path.EndpointFastPath._answer)
    wrapped: list[tuple[Any, str, str]] = [
        (fast_path, "check_endpoint_token", "token check"),
        (fast_path, "read_body", "body read"),
        (fast_path, "json_inputs", "body parsed"),
        (fast_path, "json_body", "answer encoded"),
        (fast_path, "observe_fast_path", "metrics"),
        (gateway, "choose", "traffic rule"),
        (gateway, "warm_variant", "worker ready"),
        (low_latency.LowLatencyDispatcher, "track", "execution recorded"),
        (low_latency.LowLatencyDispatcher, "_run_tracked", "execution task"),
        (low_latency.LowLatencyDispatcher, "_request", "worker request built"),
        (low_latency, "judge_report", "report judged"),
        (journal.TrackingJournal, "ended", "end journaled and spooled"),
        (local_workers.LocalWorkerPool, "_run_on", "on the worker"),
        (worker_client.WorkerClient, "request", "worker round trip"),
        (worker_client, "parse_response_head", "answer head parsed"),
    ]
    for owner, attribute, name in wrapped:
        setattr(owner, attribute, timed(name, getattr(owner, attribute)))
    stretches: list[tuple[Any, str, str]] = [
        (journal.TrackingJournal, "flush", "journal batch, in all"),
        (journal_writes._Insert, "rows", "journal rows converted (loop)"),
        (journal_writes.SqliteInserts, "_begin", "journal statements (thread)"),
        (journal_writes.SqliteInserts, "_insert", "journal statements (thread)"),
        (journal_writes.SqliteInserts, "_end", "journal statements (thread)"),
        (wal_checkpoints.WalCheckpoints, "_checkpoint", "SQLite checkpoint (thread)"),
        (snapshot.EnvironmentSnapshot, "_load", "snapshot reload"),
        (directory.EndpointDirectory, "_load", "snapshot reload"),
    ]
    for owner, attribute, name in stretches:
        setattr(owner, attribute, background(name, getattr(owner, attribute)))
    gc.callbacks.append(collection)
    atexit.register(flush)
    atexit.register(flush_background)
    return 1 + len(wrapped) + len(stretches)


if __name__ == "__main__":
    install()
    runpy.run_module("gristmill.cli", run_name="__main__", alter_sys=True)
