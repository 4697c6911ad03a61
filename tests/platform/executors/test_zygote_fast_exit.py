"""A forked child may end before the executor's fork() call resumes: the fork server's
"pid" and "exited" messages then arrive together, and the executor reads both before
fork() runs again. fork() must still hand back the child, already ended."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from gristmill_platform.executors.zygotes import Zygote

# Stands in for `python -m gristmill.runtime zygote --fd N`: speaks the same protocol, and
# answers each request with the child's pid and its end in one go, as a child that fails
# or ends at once does.
FAST_EXIT_SERVER = f"""#!{sys.executable}
import json, os, socket, sys
fd = int(sys.argv[sys.argv.index("--fd") + 1])
sock = socket.socket(fileno=fd)
sock.send(json.dumps({{"ready": os.getpid()}}).encode())
while True:
    data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 20, 2)
    if not data:
        break
    for descriptor in fds:
        os.close(descriptor)
    request = json.loads(data)
    sock.send(json.dumps({{"id": request["id"], "pid": 4242}}).encode())
    sock.send(json.dumps({{"exited": 4242, "code": 3}}).encode())
"""


@pytest.fixture
def fast_exit_python(tmp_path: Path) -> str:
    path = tmp_path / "python"
    path.write_text(FAST_EXIT_SERVER)
    path.chmod(0o755)
    return str(path)


async def test_a_child_that_ends_before_fork_resumes(tmp_path: Path,
                                                     fast_exit_python: str) -> None:
    zygote = Zygote(fast_exit_python, dict(os.environ), tmp_path / "zygote")
    await zygote.start()
    try:
        for _ in range(5):
            child = await zygote.fork("probe", [], {}, str(tmp_path))
            assert child.pid == 4242
            assert await child.wait() == 3
            assert not child.lost
        assert zygote.running == 0
    finally:
        await zygote.stop()
