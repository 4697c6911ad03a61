"""The shadow runner: a process of its own that records and runs the shadow copies of
low-latency calls (docs/rollout.md), so that none of their work runs on the event loop
answering the calls.

Profiled: a copy cost the control service 0.58 ms of its event loop (recording the
execution, its token, the request to the shadow worker, its answer, judging it, the
journal), as much as the call itself; with a sequential caller the loop's only free time
is the caller's think time between an answer and its next request (~0.2 ms), so the next
call waited for the copy. Here a copy costs the answering loop one JSON frame kept in
memory; the frames are written to a socket in a quiet moment of the calls, a chunk at a
time (shadow_release.py, settings.shadow_quiet_ms and shadow_max_delay_ms): run beside
the calls, even at the idle CPU priority, copies slowed them (docs/performance-log.md#rollout).
The runner (executions/shadow_process.py), a second
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
from gristmill_platform.executions.shadow_release import HIGH_WATER, release
from gristmill_platform.settings import Settings
from gristmill_platform.telemetry import metrics
from gristmill_platform.timeouts import within
from gristmill_platform.traffic import Traffic

log = logging.getLogger("gristmill.shadow_runner")

ENTRY = "gristmill_platform.executions.shadow_process"
# A runner that died this soon after starting is not started again at once: copies wait
# (bounded) rather than a crash loop taking the machine.
RESTART_BACKOFF_S = 1.0
# At shutdown, how long the runner gets to write what it recorded and stop its workers.
STOP_GRACE_S = 10.0


class ShadowRunner:
    def __init__(self, settings: Settings, limit: Callable[[], int],
                 traffic: Traffic) -> None:
        self._settings = settings
        self._limit = limit  # read at each copy (low_latency.SHADOW_QUEUE_LIMIT)
        self._traffic = traffic  # the warm calls in flight in this control service
        self._writer: asyncio.StreamWriter | None = None
        # copies not written to the runner yet (path, frame, when it came): while it
        # starts, and until a quiet moment of the calls (shadow_release.py)
        self._pending: deque[tuple[str, bytes, float]] = deque()
        self._quiet_s = settings.shadow_quiet_ms / 1000
        self._max_delay_s = settings.shadow_max_delay_ms / 1000
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
        """Copies still here, waiting for a quiet moment (or while a runner starts): if
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
        self._pending.append((path, data, time.monotonic()))
        if self._writer is None:
            if self._task is None:
                self._task = asyncio.get_running_loop().create_task(self._keep_running())
        elif self._flush is None or len(self._pending) >= HIGH_WATER:
            self._release()  # else a look is due already
        return True

    def _release(self) -> None:
        """Write to the runner what shadow_release.release says, and look again when it
        says (the runner's accounts and the next copy look too)."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._writer is None or not self._pending:
            return
        now = time.monotonic()
        decided = release(waiting=len(self._pending),
                          oldest_wait_s=now - self._pending[0][2],
                          quiet_for_s=self._traffic.quiet_for(),
                          in_runner=sum(self._sent.values()),
                          quiet_s=self._quiet_s, max_delay_s=self._max_delay_s)
        if decided.count:
            self._send(decided.count)
        if decided.recheck_s is not None:
            self._flush = asyncio.get_running_loop().call_later(decided.recheck_s,
                                                                self._release)

    def _send(self, count: int) -> None:
        """Write the oldest count copies in one write: the runner wakes once for them."""
        assert self._writer is not None
        batch = [self._pending.popleft() for _ in range(min(count, len(self._pending)))]
        self._writer.write(b"".join(data for _, data, _ in batch))
        for path, _, _ in batch:
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
                for path, _, _ in self._pending:
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
            if self._closing:
                self._send(len(self._pending))
                writer.write_eof()
            else:
                self._release()
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
            if self._pending and not self._closing:
                self._release()  # the next chunk, if the calls are still quiet

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
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._writer is not None:
            with contextlib.suppress(OSError, RuntimeError):
                self._send(len(self._pending))  # those still here are run, as the others
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
