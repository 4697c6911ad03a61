"""The fork server's messages, written without json.dumps and read without json.loads (to
touch fewer pages between forks, sdk/gristmill/runtime/zygote.py): the executor reads the
same JSON either way, and a request that is not exactly one JSON object is refused as
json.loads refused it. Then the real fork server, started as the executor starts it, reaps
its children and says so in those messages."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gristmill.runtime import zygote


class Captured:
    """A socket's send, kept."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        return len(data)


@pytest.mark.parametrize("request_id", ["7", "0", "id with \"quotes\" and \\", "é∂", "",
                                        None, 12])
def test_the_pid_reply_reads_as_json_dumps_wrote_it(request_id: object) -> None:
    captured = Captured()
    zygote._send_pid(captured, request_id, 4242)  # type: ignore[arg-type]
    (sent,) = captured.sent
    assert json.loads(sent) == {"id": request_id, "pid": 4242}
    sent.decode("ascii")  # as json.dumps writes it


@pytest.mark.parametrize("text", ['{"id": "1", "module": "m", "args": [], "env": {"A": "é"}, '
                                  '"cwd": "/"}', json.dumps({"id": "2", "env": {"B": "∂"}})])
def test_a_request_is_read_as_json_loads_reads_it(text: str) -> None:
    assert zygote._decode(text.encode()) == json.loads(text)


@pytest.mark.parametrize("data", [b'{"id": "1"} {"id": "2"}', b'{"id": "1"}x', b'{"id": ',
                                  b"", b"[1, 2", b"nul"])
def test_what_is_not_exactly_one_json_value_is_refused(data: bytes) -> None:
    with pytest.raises(json.JSONDecodeError):
        json.loads(data)
    with pytest.raises(json.JSONDecodeError):
        zygote._decode(data)


def test_whitespace_around_the_value_is_read_as_json_loads_reads_it() -> None:
    assert zygote._decode(b' {"id": "1"}\n') == json.loads(b' {"id": "1"}\n') == {"id": "1"}


def test_the_fork_server_reports_each_child_and_its_exit_code(tmp_path: Path) -> None:
    (tmp_path / "ends_with_three.py").write_text("import os\nos._exit(3)\n")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server = subprocess.Popen(
        [sys.executable, "-m", "gristmill.runtime", "zygote", "--fd", str(theirs.fileno())],
        pass_fds=[theirs.fileno()], env={**os.environ, "PYTHONPATH": str(tmp_path)})
    theirs.close()
    try:
        ours.settimeout(60)
        assert json.loads(ours.recv(1 << 16)) == {"ready": server.pid}
        for request_id in ("1", "2"):
            read_end, write_end = os.pipe()
            socket.send_fds(ours, [json.dumps({
                "id": request_id, "module": "ends_with_three", "args": [],
                "env": {"PATH": os.environ.get("PATH", "")}, "cwd": str(tmp_path)}).encode()],
                [write_end])
            os.close(write_end)
            messages = [json.loads(ours.recv(1 << 16)) for _ in range(2)]
            os.close(read_end)
            forked = next(m for m in messages if "pid" in m)
            assert forked["id"] == request_id
            assert {"exited": forked["pid"], "code": 3} in messages
        socket.send_fds(ours, [json.dumps({"id": "3"}).encode()], [])  # no log descriptor
        assert json.loads(ours.recv(1 << 16)) == {"id": "3", "error": "no log descriptor"}
    finally:
        ours.close()
        assert server.wait(timeout=60) == 0  # the socket closed: the fork server ends
