"""``python -m gristmill.runtime zygote``: a fork server for elastic executions.

The local backend keeps one per step environment. It imports the runner once, then, for
each execution, forks a child that becomes ``python -m <module> <args>`` as a freshly
started interpreter would: the exact environment it is sent, its own working directory,
its own session (process group), stdin on /dev/null, stdout and stderr on the pipe it is
sent, and no other descriptor. The zygote never runs step code, so nothing one execution
does can be seen by another: each child starts from the same untouched image.

Protocol, over the SOCK_SEQPACKET socket on descriptor ``--fd`` (one message each):
  zygote -> executor   {"ready": pid}                        once, after the preload
  executor -> zygote   {"id", "module", "args", "env", "cwd"} + the log pipe's descriptor,
                       and optionally the local channel's (sdk/gristmill/runtime/_channel.py),
                       which the child gets as descriptor 3, not inheritable
  zygote -> executor   {"id", "pid"}                          the child exists
                       {"id", "error"}                        it could not be forked
                       {"exited": pid, "code": returncode}    a child ended (-N: signal N)
The zygote exits when the socket closes (the control service went away); running children
carry on and are reaped by init.

Standard library only, like the rest of the runner.
"""

from __future__ import annotations

import _io
import argparse
import atexit
import contextlib
import gc
import importlib
import io
import json
import os
import runpy
import selectors
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gristmill.runtime._channel import RUNTIME_FD

PRELOAD = ("gristmill.runtime.runner",)
MAX_MESSAGE = 1 << 20


@dataclass(frozen=True)
class Request:
    module: str
    args: list[str]
    env: dict[str, str]
    cwd: str
    log_fd: int
    channel_fd: int | None = None


# The loop below runs in the fork server once per execution, between forks. After each
# fork every page it writes costs a page fault (the page is shared with the child until one
# of them writes it): about 5 us of kernel time each on some hosts. json.loads and
# json.dumps go through several layers of Python, each touching its own pages; a decoder
# made once and bytes formatting of the two replies made every execution take
# 30 to 40 fewer faults in the fork server (bench/fork_faults.py, bench/elastic_run.py).
_DECODER = json.JSONDecoder()
_quote = json.encoder.encode_basestring_ascii


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.send(json.dumps(message).encode())


def _send_pid(sock: socket.socket, request_id: object, pid: int) -> None:
    """{"id": request_id, "pid": pid}, as _send would write it."""
    if isinstance(request_id, str):
        sock.send(b'{"id": %s, "pid": %d}' % (_quote(request_id).encode(), pid))
    else:
        _send(sock, {"id": request_id, "pid": pid})


def _decode(data: bytes) -> Any:
    """The executor's request (json.dumps wrote it: ASCII), read as json.loads reads it."""
    return _DECODER.decode(data.decode())


def _reap(sock: socket.socket, ids: dict[int, str]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        ids.pop(pid, None)
        sock.send(b'{"exited": %d, "code": %d}' % (pid, os.waitstatus_to_exitcode(status)))


def serve(fd: int) -> Request:
    """Serve fork requests until the socket closes (then exit). Returns only in a child,
    with everything of the zygote's own closed."""
    sock = socket.socket(fileno=fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    # a handler (not SIG_DFL) so the wake-up descriptor is written on SIGCHLD
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    children: dict[int, str] = {}
    _send(sock, {"ready": os.getpid()})
    while True:
        for key, _ in selector.select():
            if key.fileobj is not sock:
                os.read(wake_r, 4096)
                _reap(sock, children)
                continue
            try:
                data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, 2)
            except InterruptedError:
                continue
            if not data:
                raise SystemExit(0)  # the executor is gone
            message = _decode(data)
            if not fds:
                _send(sock, {"id": message.get("id"), "error": "no log descriptor"})
                continue
            log_fd = fds[0]
            channel_fd = fds[1] if len(fds) > 1 else None
            sys.stdout.flush()
            sys.stderr.flush()
            try:
                pid = os.fork()
            except OSError as error:
                for fd in fds:
                    os.close(fd)
                _send(sock, {"id": message["id"], "error": str(error)})
                continue
            if pid == 0:
                selector.close()
                sock.detach()  # closed below with the rest; never by a later GC
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                return Request(message["module"], list(message["args"]),
                               dict(message["env"]), message["cwd"], log_fd, channel_fd)
            for fd in fds:
                os.close(fd)
            children[pid] = message["id"]
            _send_pid(sock, message["id"], pid)
            _reap(sock, children)  # a child may have ended before its SIGCHLD was handled


def become(request: Request, zygote_cwd: str, zygote_env: dict[str, str]) -> None:
    """Turn this forked child into a fresh ``python -m <module>`` process."""
    os.setsid()  # its own process group: cancel stops the whole group
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(request.log_fd, 1)
    os.dup2(request.log_fd, 2)
    first_closed = RUNTIME_FD
    if request.channel_fd is not None:
        if request.channel_fd == RUNTIME_FD:
            os.set_inheritable(RUNTIME_FD, False)
        else:
            # not inheritable: the step's own subprocesses do not get it
            os.dup2(request.channel_fd, RUNTIME_FD, inheritable=False)
        first_closed = RUNTIME_FD + 1
    # nothing of the zygote's, nor the received descriptors' originals
    os.closerange(first_closed, _max_fd())
    os.environ.clear()
    os.environ.update(request.env)
    # What the interpreter adds to its own environment as it starts (PEP 538's locale
    # coercion), as a spawned worker would have it: the zygote started with the same
    # start-up variables, so it made the same addition.
    if "LC_CTYPE" in zygote_env and "LC_CTYPE" not in request.env:
        os.environ["LC_CTYPE"] = zygote_env["LC_CTYPE"]
    os.chdir(request.cwd)
    # As `python -m` puts the working directory first on sys.path.
    if sys.path and sys.path[0] == zygote_cwd:
        sys.path[0] = os.getcwd()
    tempfile.tempdir = None  # recomputed from this execution's TMPDIR
    unbuffered = bool(request.env.get("PYTHONUNBUFFERED"))
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=unbuffered, write_through=unbuffered)


def _max_fd() -> int:
    try:
        return int(os.sysconf("SC_OPEN_MAX"))
    except (ValueError, OSError):
        return 1024


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gristmill.runtime zygote")
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args(argv)
    zygote_cwd, zygote_env = os.getcwd(), dict(os.environ)
    for name in PRELOAD:
        importlib.import_module(name)
    # What every run imports on its way, once here rather than in each child: the
    # execution-context module the runner sets (its variable is set in the child only).
    from gristmill.runtime.runner import craft_context_module

    craft_context_module()
    # The zygote's objects out of the collector's reach: a child's collections (and its
    # exit, _finish) then leave the pages it shares with the zygote alone.
    gc.freeze()
    request = serve(args.fd)
    become(request, zygote_cwd, zygote_env)
    sys.argv = ["-m", *request.args]
    code = 0
    try:
        runpy.run_module(request.module, run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        code = _exit_code(stop.code)
    except KeyboardInterrupt:
        _finish()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)  # as the interpreter ends on an uncaught ^C
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    _finish()
    os._exit(code)


def _exit_code(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    print(value, file=sys.stderr)
    return 1


def _finish() -> None:
    """What the interpreter's exit does that a program can see: wait for non-daemon
    threads, run atexit handlers, flush open files. The teardown of the modules is left
    out: in a forked child it writes to every page inherited from the zygote (tens of
    milliseconds) and the process is about to end anyway."""
    main_thread = threading.main_thread()
    for thread in threading.enumerate():
        if thread is not main_thread and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    # Files the execution left open: objects made in this child are in the collector's
    # generations; the zygote's own were frozen out of them before the fork.
    # _io._IOBase, the C base of io.IOBase and of every file class: io.IOBase's ABC
    # check costs milliseconds over the thousands of objects a run makes.
    opened = [obj for generation in range(3) for obj in gc.get_objects(generation)
              if isinstance(obj, _io._IOBase)]
    opened.sort(key=lambda obj: not isinstance(obj, io.TextIOBase))  # text layers first
    for stream in [*opened, sys.stdout, sys.stderr]:
        with contextlib.suppress(Exception):
            if not stream.closed:
                stream.flush()
