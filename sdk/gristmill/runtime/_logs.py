"""Keeping what a step prints as timestamped log lines, and shipping them.

Output is caught at two levels:

* ``sys.stdout``/``sys.stderr`` are replaced by streams that cut lines per thread, so two
  threads printing at once give two whole lines (``print`` writes the text and the newline
  in two calls) and the order between stdout and stderr is exact;
* file descriptors 1 and 2 are redirected to pipes read by one thread, so that what
  bypasses ``sys.stdout`` (C/C++ libraries, ``os.system``, subprocesses, a logging
  handler made before the runner started) is kept too.

Everything is still echoed to the original descriptors, which stay the worker's real
output (the pod log on Kubernetes, the executor's pipe locally).

The server mode (several executions in one process) cannot redirect descriptors per
execution: it routes ``sys.stdout``/``sys.stderr`` writes by context variable instead
(``RoutingStream``, ``ExecutionLogs`` below).
"""

from __future__ import annotations

import codecs
import collections
import contextvars
import faulthandler
import io
import os
import re
import select
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TextIO

LogLine = dict[str, str]

# Longer lines are split: a minified JSON dump or a progress bar without newlines must not
# become one multi-megabyte log line.
MAX_LINE_CHARS = 16 * 1024
# Lines per POST /logs; the shipper sends early when this many are waiting.
BATCH_LINES = 1000
# And characters per POST /logs, so that a request body stays around a megabyte whatever
# the length of the lines.
BATCH_CHARS = 1_000_000
# Kept in memory while the control service does not take them; the oldest go first, the
# last lines (usually the error) are the ones worth keeping.
MAX_PENDING_LINES = 100_000

_BREAKS = re.compile(r"[\r\n]")


def utc_timestamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class LogBuffer:
    """Lines waiting to be sent, in the order they were completed."""

    def __init__(
        self,
        *,
        redact: Callable[[str], str] = lambda text: text,
        batch_lines: int = BATCH_LINES,
        max_pending: int = MAX_PENDING_LINES,
    ) -> None:
        self._lock = threading.Lock()
        self._lines: collections.deque[LogLine] = collections.deque()
        self._dropped = 0
        self._redact = redact
        self._batch_lines = batch_lines
        self._max_pending = max_pending
        # Set when a full batch is waiting, so the shipper does not sit on it until the
        # next heartbeat.
        self.ready = threading.Event()

    def add(self, stream: str, message: str) -> None:
        line = {"timestamp": utc_timestamp(), "stream": stream, "message": self._redact(message)}
        with self._lock:
            if len(self._lines) >= self._max_pending:
                self._lines.popleft()
                self._dropped += 1
            self._lines.append(line)
            if len(self._lines) >= self._batch_lines:
                self.ready.set()

    def take(self, limit: int = BATCH_LINES, max_chars: int = BATCH_CHARS) -> list[LogLine]:
        """The oldest lines, at most ``limit`` of them and about ``max_chars`` characters
        (always at least one line when any is waiting)."""
        with self._lock:
            lines: list[LogLine] = []
            size = 0
            while self._lines and len(lines) < limit:
                size += len(self._lines[0]["message"])
                if lines and size > max_chars:
                    break
                lines.append(self._lines.popleft())
            if self._dropped:
                lines.insert(0, {
                    "timestamp": utc_timestamp(),
                    "stream": "stderr",
                    "message": f"[gristmill] {self._dropped} earlier log lines were dropped: "
                    "the control service did not take them in time",
                })
                self._dropped = 0
            return lines

    def put_back(self, lines: list[LogLine]) -> None:
        """Return lines that could not be sent, ahead of the newer ones."""
        with self._lock:
            self._lines.extendleft(reversed(lines))
            while len(self._lines) > self._max_pending:
                self._lines.popleft()
                self._dropped += 1

    def pending(self) -> int:
        with self._lock:
            return len(self._lines)


class _Partial:
    __slots__ = ("carriage_return", "parts", "size")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.carriage_return = False


class LineAssembler:
    """Turns writes on one stream into lines, each thread's writes kept apart."""

    def __init__(self, stream: str, buffer: LogBuffer) -> None:
        self._stream = stream
        self._buffer = buffer
        self._lock = threading.Lock()
        self._partials: dict[int, _Partial] = {}

    def feed(self, text: str, key: int | None = None) -> None:
        if not text:
            return
        if key is None:
            key = threading.get_ident()
        with self._lock:
            partial = self._partials.get(key)
            if partial is None:
                partial = self._partials[key] = _Partial()
            position = 0
            for match in _BREAKS.finditer(text):
                self._append(partial, text[position:match.start()])
                if match.group() == "\n":
                    self._emit(partial)
                else:
                    # A carriage return rewrites the line (progress bars): what comes next
                    # replaces it, unless it is the newline of a "\r\n".
                    partial.carriage_return = True
                position = match.end()
            self._append(partial, text[position:])
            if not partial.parts and not partial.carriage_return:
                del self._partials[key]

    def flush(self) -> None:
        """Emit every unfinished line (the step ended without a final newline)."""
        with self._lock:
            for partial in self._partials.values():
                if partial.parts:
                    self._emit(partial)
            self._partials.clear()

    def _append(self, partial: _Partial, piece: str) -> None:
        if not piece:
            return
        if partial.carriage_return:
            partial.parts.clear()
            partial.size = 0
            partial.carriage_return = False
        while partial.size + len(piece) > MAX_LINE_CHARS:
            room = MAX_LINE_CHARS - partial.size
            partial.parts.append(piece[:room])
            piece = piece[room:]
            self._emit(partial)
        partial.parts.append(piece)
        partial.size += len(piece)

    def _emit(self, partial: _Partial) -> None:
        self._buffer.add(self._stream, "".join(partial.parts))
        partial.parts.clear()
        partial.size = 0
        partial.carriage_return = False


class _BytesView(io.RawIOBase):
    """``sys.stdout.buffer`` for code that writes bytes."""

    def __init__(self, text: io.TextIOBase) -> None:
        super().__init__()
        self._text = text
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        raw = bytes(data)
        self._text.write(self._decoder.decode(raw))
        return len(raw)

    def flush(self) -> None:
        self._text.flush()

    def fileno(self) -> int:
        return self._text.fileno()


class _LogTextStream(io.TextIOBase):
    """What ``sys.stdout``/``sys.stderr`` stand-ins share: a line-buffered UTF-8 text
    stream that is not a terminal, over a file descriptor (so a subprocess given
    ``sys.stdout`` writes where this stream's output goes)."""

    # Class attributes: io.TextIOBase defines both as read-only descriptors.
    encoding = "utf-8"
    errors = "backslashreplace"

    def __init__(self, name: str, fd: int) -> None:
        super().__init__()
        self._name = name
        self._fd = fd
        self._bytes = _BytesView(self)

    @property
    def name(self) -> str:
        return f"<{self._name}>"

    @property
    def buffer(self) -> _BytesView:
        return self._bytes

    @property
    def line_buffering(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        # Logs are not a terminal: libraries should not send colours or cursor moves.
        return False

    def fileno(self) -> int:
        return self._fd

    def reconfigure(self, **_: Any) -> None:
        # Steps call sys.stdout.reconfigure(encoding="utf-8", line_buffering=True); the
        # stream is already both.
        return None


class CapturedStream(_LogTextStream):
    """Stands in for ``sys.stdout`` or ``sys.stderr`` while the step runs."""

    def __init__(
        self,
        name: str,
        echo: TextIO,
        assembler: LineAssembler,
        fd: int,
        drain: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(name, fd)
        self._drain = drain
        self._echo: TextIO | None = echo
        self._assembler = assembler
        self._echo_lock = threading.Lock()
        self.forked = False

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if self.forked:
            # A forked child (multiprocessing's default on Linux) has no shipper and may
            # have inherited a held lock: its output goes through the redirected
            # descriptor, which the parent's pump reads.
            os.write(self._fd, text.encode("utf-8", "backslashreplace"))
            return len(text)
        if "\n" in text:
            self._drain()
        echo = self._echo
        if echo is not None:
            try:
                with self._echo_lock:
                    echo.write(text)
                    if "\n" in text or "\r" in text:
                        echo.flush()
            except (OSError, ValueError):
                # The real output is gone (closed pipe): keep recording, stop echoing.
                self._echo = None
        self._assembler.feed(text)
        return len(text)

    def flush(self) -> None:
        echo = self._echo
        if echo is not None:
            try:
                with self._echo_lock:
                    echo.flush()
            except (OSError, ValueError):
                self._echo = None


class _DescriptorPump:
    """What is written to a redirected descriptor, echoed and recorded.

    ``_PumpThread`` reads it as data comes; ``drain`` lets a writer at the Python level
    pull in what is already waiting first, so that a subprocess's line printed before the
    step's next ``print`` is recorded before it too.
    """

    def __init__(self, read_fd: int, echo_fd: int, assembler: LineAssembler) -> None:
        self.read_fd = read_fd
        os.set_blocking(read_fd, False)
        self._echo_fd: int | None = echo_fd
        self._assembler = assembler
        # A key of its own in the assembler: drain() runs in the step's threads, whose
        # unfinished Python-level lines must not mix with the descriptor's.
        self._key = -read_fd - 1
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._lock = threading.Lock()
        self._open = True

    def drain(self) -> None:
        with self._lock:
            if self._open:
                self._read_available()

    def pump(self) -> bool:
        """Read what is there; False once every writer has closed the pipe (or it was
        closed here)."""
        with self._lock:
            return self._open and self._read_available()

    def close(self) -> None:
        """Drain what was written so far and close, without waiting for the pipe's end:
        a background process the step left behind may hold it open forever."""
        with self._lock:
            if self._open:
                self._read_available()
            self._assembler.feed(self._decoder.decode(b"", final=True), key=self._key)
            self._open = False
            os.close(self.read_fd)

    def _read_available(self, max_bytes: int = 1 << 20) -> bool:
        """Read until the pipe is empty; False once every writer has closed it.

        Bounded, so that a subprocess writing faster than this reads cannot keep a
        ``print`` of the step (or ``stop``) here forever.
        """
        while max_bytes > 0:
            try:
                data = os.read(self.read_fd, 65536)
            except BlockingIOError:
                return True
            if not data:
                return False
            max_bytes -= len(data)
            self._echo(data)
            self._assembler.feed(self._decoder.decode(data), key=self._key)
        return True

    def _echo(self, data: bytes) -> None:
        if self._echo_fd is None:
            return
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._echo_fd, view):]
        except BlockingIOError:
            # The real output is a non-blocking pipe that is full: drop the echo, never
            # the log line.
            return
        except OSError:
            self._echo_fd = None


class _PumpThread:
    """One thread reading every redirected descriptor, and calling ``tick`` at least
    every ``TICK_S`` while it runs. One thread, not one per descriptor: in a freshly
    forked worker each thread's start costs about 0.3 ms of CPU (its stack, its faults),
    a visible share of a short execution's."""

    TICK_S = 0.05

    def __init__(self, pumps: list[_DescriptorPump], tick: Callable[[], None],
                 report: Callable[[str], None]) -> None:
        self._pumps = pumps
        self._tick = tick
        self._report = report
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gristmill-fd-pump", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        reading = {pump.read_fd: pump for pump in self._pumps}
        while not self._stopping.is_set():
            if reading:
                ready, _, _ = select.select(list(reading), [], [], self.TICK_S)
                for fd in ready:
                    if not reading[fd].pump():
                        del reading[fd]  # every writer closed it
            else:  # the step closed both: ticks still due
                self._stopping.wait(self.TICK_S)
            try:
                self._tick()
            except Exception as error:
                # the descriptors must still be read, or the step blocks on a full pipe
                self._tick = _no_tick
                self._report(f"[gristmill] the log thread's tick failed, no more ticks: "
                             f"{error!r}")


def _no_tick() -> None:
    return None


class OutputCapture:
    """Swaps the process's output for capturing ones; ``stop`` puts everything back."""

    def __init__(self, buffer: LogBuffer) -> None:
        self.buffer = buffer
        self._assemblers = {
            "stdout": LineAssembler("stdout", buffer),
            "stderr": LineAssembler("stderr", buffer),
        }
        self._saved_streams: tuple[TextIO, TextIO] | None = None
        self._saved_fds: dict[int, int] = {}
        self._pumps: list[_DescriptorPump] = []
        self._pump_thread: _PumpThread | None = None
        self._echo_files: list[TextIO] = []
        self._real_stderr: TextIO = sys.stderr

    def start(self, tick: Callable[[], None] = lambda: None) -> bool:
        """Capture from now on. ``tick``: called every few hundredths of a second by the
        thread reading the descriptors; False when there is no such thread (descriptors
        could not be redirected) and ``tick`` will not be called."""
        streams = (sys.stdout, sys.stderr)
        for stream in streams:
            _flush_quietly(stream)
        self._saved_streams = streams
        echoes: dict[int, TextIO] = {}
        try:
            if os.name == "nt":
                # select() does not wait on pipes there.
                raise OSError("descriptor capture needs a POSIX system")
            for fd, name in ((1, "stdout"), (2, "stderr")):
                saved = os.dup(fd)
                self._saved_fds[fd] = saved
                original = streams[fd - 1]
                echo = open(  # noqa: SIM115 - closed in stop()
                    saved, "w", encoding=getattr(original, "encoding", None) or "utf-8",
                    errors="backslashreplace", closefd=False,
                )
                self._echo_files.append(echo)
                echoes[fd] = echo
                read_fd, write_fd = os.pipe()
                os.dup2(write_fd, fd)
                os.close(write_fd)
                self._pumps.append(_DescriptorPump(read_fd, saved, self._assemblers[name]))
            self._pump_thread = _PumpThread(list(self._pumps), tick, self.report)
            self._pump_thread.start()
            # A crash dump must reach the real stderr directly: the pump thread dies with
            # the interpreter and would lose it.
            faulthandler.enable(file=self._saved_fds[2], all_threads=True)
        except OSError:
            # No usable descriptors (an embedded interpreter, a closed fd 1): keep the
            # Python-level capture only.
            for opened in self._echo_files:
                opened.close()
            self._echo_files.clear()
            self._restore_descriptors()
            echoes = {1: streams[0], 2: streams[1]}
        self._real_stderr = echoes[2]
        pumps = tuple(self._pumps)

        def drain() -> None:
            for pump in pumps:
                pump.drain()

        captured = (
            CapturedStream("stdout", echoes[1], self._assemblers["stdout"], 1, drain),
            CapturedStream("stderr", echoes[2], self._assemblers["stderr"], 2, drain),
        )
        sys.stdout, sys.stderr = captured
        if self._pumps and hasattr(os, "register_at_fork"):
            def in_child() -> None:
                for stream in captured:
                    stream.forked = True

            os.register_at_fork(after_in_child=in_child)
        return self._pump_thread is not None

    def report(self, message: str) -> None:
        """Tell the operator something on the real stderr, outside the step's logs."""
        try:
            self._real_stderr.write(message.rstrip("\n") + "\n")
            self._real_stderr.flush()
        except (OSError, ValueError):
            pass

    def stop(self) -> None:
        if self._saved_streams is None:
            return
        captured = (sys.stdout, sys.stderr)
        for stream in captured:
            _flush_quietly(stream)
        sys.stdout, sys.stderr = self._saved_streams
        # What the step wrote to sys.__stdout__ sits in that object's buffer: into the pipe
        # with it before the descriptor goes back.
        for stream in (sys.__stdout__, sys.__stderr__, *self._saved_streams):
            _flush_quietly(stream)
        self._restore_descriptors()
        for assembler in self._assemblers.values():
            assembler.flush()
        for echo in self._echo_files:
            _flush_quietly(echo)
            echo.close()
        self._echo_files.clear()
        self._saved_streams = None
        self._real_stderr = sys.stderr

    def _restore_descriptors(self) -> None:
        for fd, saved in self._saved_fds.items():
            os.dup2(saved, fd)
        if self._pump_thread is not None:
            self._pump_thread.stop()
            self._pump_thread = None
        for pump in self._pumps:
            pump.close()
        self._pumps.clear()
        if self._saved_fds:
            if faulthandler.is_enabled():
                faulthandler.enable(file=sys.__stderr__ or 2, all_threads=True)
            for saved in self._saved_fds.values():
                os.close(saved)
        self._saved_fds.clear()


def _flush_quietly(stream: Any) -> None:
    try:
        if stream is not None:
            stream.flush()
    except (OSError, ValueError):
        pass


class LogShipper:
    """Sends the buffer with ``POST /logs`` at least every ``interval`` seconds.

    The call is the worker's heartbeat, so it goes out even with no lines. A failed send
    keeps the lines for the next one; the last lines ride on ``finish`` anyway.
    """

    def __init__(
        self,
        buffer: LogBuffer,
        send: Callable[[list[LogLine]], None],
        interval_s: float,
        *,
        on_gone: Callable[[BaseException], None],
        is_gone: Callable[[BaseException], bool],
        report: Callable[[str], None],
        batch_lines: int = BATCH_LINES,
    ) -> None:
        self._buffer = buffer
        self._send = send
        self._interval = interval_s
        self._on_gone = on_gone
        self._is_gone = is_gone
        self._report = report
        self._batch = batch_lines
        self._stopping = threading.Event()
        self._failing = False
        self._first_beat = time.monotonic() + interval_s
        self._start_lock = threading.Lock()
        self._started = False
        self._thread = threading.Thread(target=self._run, name="gristmill-logs", daemon=True)

    def start(self) -> None:
        """Start shipping now (its first heartbeat one interval after it was made)."""
        with self._start_lock:
            if not self._started and not self._stopping.is_set():
                self._started = True
                self._thread.start()

    def start_when_due(self) -> None:
        """``start`` once there is something to do: the first heartbeat is due, or a full
        batch is waiting. Called often (OutputCapture's tick), so an execution that ends
        sooner, and prints less, never starts the shipper's thread: its lines ride on
        finish."""
        if not self._started and (self._buffer.ready.is_set()
                                  or time.monotonic() >= self._first_beat):
            self.start()

    def stop(self) -> None:
        with self._start_lock:
            self._stopping.set()
            started = self._started
        self._buffer.ready.set()
        if started:
            self._thread.join()

    def _run(self) -> None:
        next_beat = self._first_beat
        while True:
            self._buffer.ready.wait(max(0.0, next_beat - time.monotonic()))
            if self._stopping.is_set():
                return
            self._buffer.ready.clear()
            if time.monotonic() < next_beat and self._buffer.pending() < self._batch:
                continue
            self._ship()
            next_beat = time.monotonic() + self._interval

    def _ship(self) -> None:
        while True:
            lines = self._buffer.take(self._batch)
            try:
                self._send(lines)
            except Exception as error:
                if self._is_gone(error):
                    self._on_gone(error)
                    return
                self._buffer.put_back(lines)
                if not self._failing:
                    self._report(f"[gristmill] could not send logs, will retry: {error}")
                self._failing = True
                return
            if self._failing:
                self._report("[gristmill] sending logs again")
                self._failing = False
            if self._buffer.pending() < self._batch or self._stopping.is_set():
                return


# -- the server mode: one process, several executions ----------------------------------------


class ExecutionLogs:
    """The lines one execution prints, in a worker that runs several at once.

    Its buffer is made at the first line: most warm executions print nothing, and a
    buffer costs more than the rest of their bookkeeping."""

    STREAMS = ("stdout", "stderr")

    def __init__(self, redact: Callable[[str], str] = lambda text: text) -> None:
        self._redact = redact
        self._lock = threading.Lock()  # the step's own threads may print at once
        self._buffer: LogBuffer | None = None
        self._assemblers: dict[str, LineAssembler] = {}
        # Set when the execution has answered: what its leftover tasks and threads print
        # afterwards goes to the worker's own output instead of a buffer nobody reads.
        self.closed = False

    def feed(self, stream: str, text: str) -> None:
        assembler = self._assemblers.get(stream)
        if assembler is None:
            if stream not in self.STREAMS:
                raise KeyError(stream)
            with self._lock:
                if self._buffer is None:
                    # Nothing ships these while the execution runs (the answer carries
                    # them), so the early-batch signal is never wanted.
                    self._buffer = LogBuffer(redact=self._redact,
                                             batch_lines=MAX_PENDING_LINES + 1)
                assembler = self._assemblers.setdefault(
                    stream, LineAssembler(stream, self._buffer))
        assembler.feed(text)

    def close(self) -> list[LogLine]:
        """Every line, unfinished ones included; the execution takes no more."""
        self.closed = True
        with self._lock:
            buffer, assemblers = self._buffer, list(self._assemblers.values())
        if buffer is None:
            return []
        for assembler in assemblers:
            assembler.flush()
        return buffer.take(limit=MAX_PENDING_LINES + 1, max_chars=sys.maxsize)


# The logs of the execution the current code runs for; None outside any execution.
# asyncio tasks and run_in_executor(copy_context().run, ...) calls inherit it, threads the
# step starts itself do not (their lines go to the worker's output).
current_logs: contextvars.ContextVar[ExecutionLogs | None] = contextvars.ContextVar(
    "gristmill_execution_logs", default=None
)


class RoutingStream(_LogTextStream):
    """Stands in for ``sys.stdout`` or ``sys.stderr`` in a server-mode worker: a write
    belongs to the execution in whose context it happens; outside any execution it goes to
    the real stream (which the control service keeps as the deployment's logs)."""

    def __init__(self, name: str, real: TextIO) -> None:
        super().__init__(name, real.fileno())
        self._real: TextIO | None = real
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        logs = current_logs.get()
        if logs is not None and not logs.closed:
            logs.feed(self._name, text)
            return len(text)
        real = self._real
        if real is not None:
            try:
                with self._lock:
                    real.write(text)
                    if "\n" in text or "\r" in text:
                        real.flush()
            except (OSError, ValueError):
                self._real = None
        return len(text)

    def flush(self) -> None:
        real = self._real
        if real is not None:
            try:
                with self._lock:
                    real.flush()
            except (OSError, ValueError):
                self._real = None
