"""The benches' lean load generator (bench/_load.py): every request sent is a whole answer
read back, counted once; an answer that is not a whole 200 fails the run instead of being
counted."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from types import ModuleType

import pytest

from tests.scripts._bench_modules import bench_module


def bench_load() -> ModuleType:
    return bench_module("_load")


class _Handler(socketserver.StreamRequestHandler):
    """Answers each POST as server.mode says; counts the requests whole."""

    server: _Server

    def handle(self) -> None:
        while True:
            length = None
            line = self.rfile.readline()
            if not line:
                return
            while line not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
                line = self.rfile.readline()
            body = self.rfile.read(length or 0)
            with self.server.lock:
                self.server.requests += 1
                number = self.server.requests
                self.server.bodies.add(body)
            if not self._answer(number):
                return

    def _answer(self, number: int) -> bool:
        mode = self.server.mode
        if mode == "close" and number > self.server.fail_after:
            return False
        if mode == "error" and number > self.server.fail_after:
            self.wfile.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            return True
        if mode == "chunked":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"2\r\nok\r\n0\r\n\r\n")
            return True
        payload = b'{"text":"hi"}'
        # the head and the body in two writes: the generator reassembles the answer
        self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"CONTENT-LENGTH: " + str(len(payload)).encode() + b"\r\n\r\n")
        self.wfile.flush()
        self.wfile.write(payload)
        return True


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, mode: str, fail_after: int = 0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = mode
        self.fail_after = fail_after
        self.requests = 0
        self.bodies: set[bytes] = set()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/endpoints/echo?x=1"


def _serving(mode: str, fail_after: int = 0) -> Iterator[_Server]:
    server = _Server(mode, fail_after)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[_Server]:
    yield from _serving(*request.param)


@pytest.mark.parametrize("server", [("ok",)], indirect=True)
def test_every_request_is_answered_and_counted_once(server: _Server) -> None:
    load = bench_load()
    result = load.load(server.url, b'{"text":"hi"}', {"Authorization": "EndpointToken t"},
                       connections=4, total=203)
    assert result.requests == 203
    # the warm-up's requests are sent, not counted
    assert server.requests == 203 + 4 * load.WARM_UP_PER_CONNECTION
    assert result.warm_up == 4 * load.WARM_UP_PER_CONNECTION
    assert server.bodies == {b'{"text":"hi"}'}
    assert result.seconds > 0 and result.per_second == 203 / result.seconds
    assert result.client_cpu_s >= 0


@pytest.mark.parametrize(("server", "message"), [
    (("error", 30), "answer 503"),
    (("chunked",), "without Content-Length"),
    (("close", 30), "connection closed mid-run"),
], indirect=["server"])
def test_an_answer_that_is_not_a_whole_200_fails_the_run(server: _Server, message: str
                                                         ) -> None:
    load = bench_load()
    with pytest.raises(load.LoadError, match=message):
        load.load(server.url, b"{}", {}, connections=2, total=100)


def test_the_request_is_encoded_once_with_its_path_query_and_headers() -> None:
    load = bench_load()
    request = load.encode_post("http://127.0.0.1:8/endpoints/a?token=x", b'{"a":1}',
                               {"Authorization": "EndpointToken t"})
    head, _, body = request.partition(b"\r\n\r\n")
    assert body == b'{"a":1}'
    assert head.split(b"\r\n") == [
        b"POST /endpoints/a?token=x HTTP/1.1", b"Host: 127.0.0.1:8",
        b"Content-Type: application/json", b"Content-Length: 7",
        b"Authorization: EndpointToken t"]
    with pytest.raises(ValueError, match="a host and a port"):
        load.load("http://127.0.0.1/x", b"", {}, connections=1, total=1)
