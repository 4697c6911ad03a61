"""Concurrent multipart uploads: part order, failures stopping the other parts, and the
positional reads that feed them. A fake transport controls when each part finishes."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from gristmill._files import RangeReader, open_source
from gristmill._transport import Transport
from gristmill.errors import DataStoreError, GristmillError
from gristmill.progress import TransferProgress
from gristmill.resources import _multipart as multipart
from gristmill.resources._multipart import MultipartUploader, PartSpec, plan_parts


class FakeTransport:
    """Presigns part n as URL ``u{n}``; ``on_put`` decides what each PUT does."""

    def __init__(self, on_put: Callable[[int, Callable[[], Iterator[bytes]]], bytes]) -> None:
        self.on_put = on_put
        self.presigned_parts: list[int] = []
        self.received: dict[int, bytes] = {}
        self._lock = threading.Lock()

    def request(self, method: str, url: str, *, json: Any = None, **_: Any) -> Any:
        with self._lock:
            self.presigned_parts.append(json["part_number"])
        return {"signed_url": f"u{json['part_number']}", "headers": {}}

    def presigned(
        self,
        method: str,
        url: str,
        *,
        content: Callable[[], Iterator[bytes]],
        headers: dict[str, str],
    ) -> httpx.Response:
        number = int(url[1:])
        body = self.on_put(number, content)
        with self._lock:
            self.received[number] = body
        return httpx.Response(200, headers={"ETag": f'"e{number}"'})


@contextmanager
def _uploader(
    transport: FakeTransport,
    data: bytes,
    part_size: int,
    in_flight: int,
    bar: TransferProgress | None = None,
) -> Iterator[MultipartUploader]:
    with open_source(io.BytesIO(data)) as source:
        yield MultipartUploader(
            cast(Transport, transport),
            "http://x/api/v1/data-store/upload/multipart",
            "obj",
            {"upload_id": "u"},
            source,
            part_size,
            bar or TransferProgress("test", len(data), enabled=False),
            max_in_flight=in_flight,
        )


def test_plan_parts() -> None:
    assert plan_parts(25, 10) == [PartSpec(1, 0, 10), PartSpec(2, 10, 10), PartSpec(3, 20, 5)]
    assert plan_parts(20, 10) == [PartSpec(1, 0, 10), PartSpec(2, 10, 10)]
    assert plan_parts(3, 10) == [PartSpec(1, 0, 3)]


def test_parts_are_listed_in_order_even_when_the_first_finishes_last() -> None:
    others_done = threading.Event()
    finished: list[int] = []

    def on_put(number: int, body: Callable[[], Iterator[bytes]]) -> bytes:
        if number == 1:
            assert others_done.wait(10)
        data = b"".join(body())
        finished.append(number)
        if len(finished) == 3:
            others_done.set()
        return data

    transport = FakeTransport(on_put)
    data = bytes(range(40))
    with _uploader(transport, data, 10, in_flight=2) as uploader:
        parts = uploader.upload_parts()
    assert finished[-1] == 1
    assert parts == [{"number": n, "metadata": f'"e{n}"'} for n in (1, 2, 3, 4)]
    assert b"".join(transport.received[n] for n in (1, 2, 3, 4)) == data


def test_a_failed_part_stops_the_others_and_is_raised() -> None:
    outcome: dict[int, str] = {}
    holder: list[MultipartUploader] = []

    def on_put(number: int, body: Callable[[], Iterator[bytes]]) -> bytes:
        if number == 2:
            raise DataStoreError("AccessDenied", "refused", status_code=403)
        if number == 1:
            # Still sending when part 2 fails: it must give up at its next piece.
            assert holder[0]._stop.wait(10)
            try:
                return b"".join(body())
            except GristmillError as exc:
                outcome[1] = type(exc).__name__
                raise
        return b"".join(body())

    transport = FakeTransport(on_put)
    with (
        _uploader(transport, b"x" * 100, 10, in_flight=3) as uploader,
        pytest.raises(DataStoreError, match="refused"),
    ):
        holder.append(uploader)
        uploader.upload_parts()
    assert outcome == {1: "_Stopped"}
    assert len(transport.presigned_parts) < 10


def test_a_retried_part_body_starts_over(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multipart, "PIECE_B", 4)

    def on_put(number: int, body: Callable[[], Iterator[bytes]]) -> bytes:
        if number == 2:
            # A first try that died after two pieces went out, as the transport's retry
            # would leave it: the progress it reported must be taken back.
            first = body()
            next(first), next(first), next(first)
        return b"".join(body())

    transport = FakeTransport(on_put)
    bar = TransferProgress("test", 30, enabled=False)
    with _uploader(transport, b"abcdefghij" * 3, 10, in_flight=1, bar=bar) as uploader:
        uploader.upload_parts()
    assert transport.received == {1: b"abcdefghij", 2: b"abcdefghij", 3: b"abcdefghij"}
    assert bar.completed == 30


def test_a_file_that_shrinks_during_the_upload_is_reported(tmp_path: Path) -> None:
    file = tmp_path / "shrinking.bin"
    file.write_bytes(b"y" * 30)

    def on_put(number: int, body: Callable[[], Iterator[bytes]]) -> bytes:
        file.write_bytes(b"y" * 5)
        return b"".join(body())

    transport = FakeTransport(on_put)
    with open_source(file) as source:
        uploader = MultipartUploader(
            cast(Transport, transport),
            "http://x",
            "obj",
            {},
            source,
            10,
            TransferProgress("t", 30, enabled=False),
            max_in_flight=1,
        )
        with pytest.raises(GristmillError, match="changed size"):
            uploader.upload_parts()


@pytest.mark.parametrize("kind", ["file", "buffer"])
def test_range_reader_reads_from_several_threads(tmp_path: Path, kind: str) -> None:
    data = bytes(range(256)) * 64
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    with path.open("rb") as opened:
        file: Any = opened if kind == "file" else io.BytesIO(data)
        reader = RangeReader(file)
        results: dict[int, bytes] = {}

        def read(offset: int) -> None:
            for _ in range(50):
                results[offset] = reader.read(offset, 1000)

        threads = [threading.Thread(target=read, args=(o,)) for o in range(0, len(data), 1000)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert reader.read(len(data), 10) == b""
    assert len(results) == len(threads)
    assert all(results[o] == data[o : o + 1000] for o in results)
