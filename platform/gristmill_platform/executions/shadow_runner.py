"""The shadow runner: a process of its own that records and runs the shadow copies of
low-latency calls (docs/rollout.md), so that none of their work runs on the event loop
answering the calls.

Profiled: a copy cost the control service 0.58 ms of its event loop (recording the
execution, its token, the request to the shadow worker, its answer, judging it, the
journal), as much as the call itself; with a sequential caller the loop's only free time
is the caller's think time between an answer and its next request (~0.2 ms), so the next
call waited for the copy. Here a copy costs the answering loop one JSON frame added to a
batch, written to a socket 20 ms after the batch's first copy (settings.shadow_batch_ms):
written with each call, the frame woke the runner while the call's own processes needed
the CPUs (docs/rollout.md#figures). The runner (executions/shadow_process.py), a second
control service on the same database with no listener and at a low CPU priority, does the
rest with the same code (LowLatencyDispatcher.shadow: the queue per shadow pipeline, the
10,000 bound, the execution rows with shadow: true, validations).

Started at the first copy, through a socket pair (no path, no port: only the child holds
the other end) and the settings on its standard input; its logs go where this process's
go. Started again at the next copy if it died. Every copy sent is counted until the runner
says what became of it (shadow_frames.py): dropped ones, and those a dead runner had not
run, are counted in gristmill_shadow_copies_dropped_total and logged here. What waits here
and there together is bounded by the same limit as the in-process queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from gristmill_platform.executions import shadow_frames as frames
from gristmill_platform.settings import Settings
from gristmill_platform.telemetry import metrics
from gristmill_platform.timeouts import within

log = logging.getLogger("gristmill.shadow_runner")

ENTRY = "gristmill_platform.executions.shadow_process"
# A runner that died this soon after starting is not started again at once: copies wait
# (bounded) rather than a crash loop taking the machine.
RESTART_BACKOFF_S = 1.0
# At shutdown, how long the runner gets to write what it recorded and stop its workers.
STOP_GRACE_S = 10.0
# A batch is written at once when this many copies wait in it (one write stays small).
BATCH_MAX = 256


class ShadowRunner:
    def __init__(self, settings: Settings, limit: Callable[[], int]) -> None:
        self._settings = settings
        self._limit = limit  # read at each copy (low_latency.SHADOW_QUEUE_LIMIT)
        self._writer: asyncio.StreamWriter | None = None
        # copies not written to the runner yet: while it starts, and between two batches
        self._pending: deque[tuple[str, bytes]] = deque()
        self._batch_s = settings.shadow_batch_ms / 1000
        self._flush: asyncio.TimerHandle | None = None
        self._sent: dict[str, int] = {}  # endpoint path -> sent, not yet accounted for
        self._names: dict[str, str] = {}  # endpoint path -> deployment name (metrics)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.lost = 0  # copies a runner that stopped had not run

    @property
    def waiting(self) -> int:
        """Copies handed over and not run yet, here and in the runner."""
        return len(self._pending) + sum(self._sent.values())

    @property
    def unwritten(self) -> int:
        """Copies still here, in the batch being gathered (or while a runner starts): if
        the runner dies now they go to the next one, they are not lost."""
        return len(self._pending)

    def offer(self, path: str, deployment: str, pipeline: str, body: Mapping[str, Any]
              ) -> bool:
        """Hand a copy to the runner (on the call's path: no I/O waited for). False, and
        nothing sent, when as many copies wait as the limit, or it cannot be encoded."""
        if self._closing or self.waiting >= self._limit():
            return False
        try:
            data = frames.copy_frame(path, pipeline, body)
        except (TypeError, ValueError):
            log.exception("the shadow copy for %s of a call to %s could not be encoded",
                          pipeline, deployment)
            return False
        self._names[path] = deployment
        self._pending.append((path, data))
        if self._writer is None:
            if self._task is None:
                self._task = asyncio.get_running_loop().create_task(self._keep_running())
        elif self._batch_s <= 0 or len(self._pending) >= BATCH_MAX:
            self._send_pending()
        elif self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(self._batch_s,
                                                                self._send_pending)
        return True

    def _send_pending(self) -> None:
        """Write every copy waiting here in one write: the runner wakes once for them all
        (docs/rollout.md#shadow-runner, batches)."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._writer is None or not self._pending:
            return
        batch = list(self._pending)
        self._pending.clear()
        self._writer.write(b"".join(data for _, data in batch))
        for path, _ in batch:
            self._sent[path] = self._sent.get(path, 0) + 1

    async def _keep_running(self) -> None:
        """Runs a runner while copies wait for one; ends when one stops with none waiting
        (the next copy starts another)."""
        try:
            while self._pending and not self._closing:
                started = time.monotonic()
                try:
                    await self._run_once()
                except Exception:
                    log.exception("the shadow runner failed")
                finally:
                    self._stopped()
                if self._pending and time.monotonic() - started < RESTART_BACKOFF_S:
                    await asyncio.sleep(RESTART_BACKOFF_S)
        finally:
            self._task = None
            if self._closing and self._pending:
                counts: dict[str, int] = {}
                for path, _ in self._pending:
                    counts[path] = counts.get(path, 0) + 1
                self._pending.clear()
                self._lose(counts, "the control service stopped before they were sent")

    async def _run_once(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", ENTRY, str(theirs.fileno()),
                stdin=asyncio.subprocess.PIPE, pass_fds=(theirs.fileno(),))
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.starts += 1
        process = self.process
        assert process.stdin is not None
        # its settings, secrets included: a pipe only this process and the child hold
        process.stdin.write(pickle.dumps(self._settings))
        with contextlib.suppress(OSError):
            await process.stdin.drain()
        process.stdin.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        log.info("shadow runner started (pid %d)", process.pid)
        self._writer = writer
        try:
            self._send_pending()
            if self._closing:
                writer.write_eof()
            await self._read_accounts(reader)
        finally:
            self._writer = None
            if self._flush is not None:  # what was not written goes to the next runner
                self._flush.cancel()
                self._flush = None
            writer.close()
            try:
                await within(process.wait(), STOP_GRACE_S)
            except TimeoutError:
                process.kill()
                await process.wait()
            log.log(logging.INFO if self._closing else logging.WARNING,
                    "shadow runner (pid %d) exited with code %s", process.pid,
                    process.returncode)

    async def _read_accounts(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                header = await reader.readexactly(frames.HEADER.size)
                found = frames.document(await reader.readexactly(frames.length(header)))
                done, dropped = (frames.read_counts(found, "done"),
                                 frames.read_counts(found, "dropped"))
            except (asyncio.IncompleteReadError, ConnectionError):
                return  # it stopped
            except frames.BadFrame:
                log.exception("the shadow runner sent a frame it should not have")
                return
            for path, count in done.items():
                self._settle(path, count)
            for path, count in dropped.items():
                self._settle(path, count)
                self._count_dropped(path, count)
                log.warning("the shadow runner dropped %d copies of calls to %s: too many "
                            "were waiting", count, self._names.get(path, path))

    def _settle(self, path: str, count: int) -> None:
        left = self._sent.get(path, 0) - count
        if left > 0:
            self._sent[path] = left
        else:
            self._sent.pop(path, None)

    def _count_dropped(self, path: str, count: int) -> None:
        metrics.SHADOW_COPIES_DROPPED.labels(self._names.get(path, path)).inc(count)

    def _stopped(self) -> None:
        """Copies sent to a runner that stopped and not accounted for by it are lost:
        counted as dropped and logged (one that ended in the moment before it stopped was
        recorded all the same: counted twice rather than missed)."""
        sent, self._sent = self._sent, {}
        self._lose(sent, "the shadow runner stopped before running them")

    def _lose(self, counts: Mapping[str, int], why: str) -> None:
        for path, count in counts.items():
            if count:
                self.lost += count
                self._count_dropped(path, count)
                log.warning("%d shadow copies of calls to %s are lost: %s", count,
                            self._names.get(path, path), why)

    async def shutdown(self) -> None:
        """Stop the runner: it stops taking copies, writes what it recorded and stops its
        workers; copies it had not run are counted as lost."""
        self._closing = True
        if self._writer is not None:
            with contextlib.suppress(OSError, RuntimeError):
                self._send_pending()  # a batch not written yet is run, as the others
                self._writer.write_eof()
        task = self._task
        if task is not None:
            try:
                await within(asyncio.shield(task), STOP_GRACE_S + 5)
            except TimeoutError:
                if self.process is not None and self.process.returncode is None:
                    self.process.kill()
                with contextlib.suppress(BaseException):
                    await task
