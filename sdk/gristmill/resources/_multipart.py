"""Multipart data store uploads, several parts in flight at once (wire contract §9.3).

Each part is presigned, then streamed from the file to its signed URL in pieces read at
its own offset, so the memory held is a few pieces per part in flight, whatever the part
size. The ``parts`` list sent to ``end`` is in part order, whatever order parts finish in.
The first part that fails stops the others and is raised: ``end`` is then never called,
so the platform does not store a partial object.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from gristmill._files import RangeReader, Source
from gristmill._transport import Transport
from gristmill.errors import GristmillError, InvalidResponseError
from gristmill.progress import TransferProgress
from gristmill.resources._base import expect_dict, expect_str

# Two cores are enough to keep one client busy; more parts in flight mostly adds
# contention on the store (and on the platform's database for each presign).
MAX_PARTS_IN_FLIGHT = 4
# Size of the reads that feed a part's body. Large enough that the per-piece Python
# overhead vanishes, small enough that 4 parts in flight hold little memory.
PIECE_B = 1024 * 1024

_PART_WHAT = "POST /data-store/upload/multipart/part"


@dataclass(frozen=True)
class PartSpec:
    number: int
    offset: int
    size: int


def plan_parts(total: int, part_size: int) -> list[PartSpec]:
    """Parts of ``part_size`` bytes (the last may be shorter), numbered from 1."""
    return [
        PartSpec(number, offset, min(part_size, total - offset))
        for number, offset in enumerate(range(0, total, part_size), start=1)
    ]


class _Stopped(GristmillError):
    """Raised inside a part's body when another part has failed: abandon this one."""


class MultipartUploader:
    def __init__(
        self,
        transport: Transport,
        base_url: str,
        object_path: str,
        configuration: Any,
        source: Source,
        part_size: int,
        bar: TransferProgress,
        *,
        max_in_flight: int = MAX_PARTS_IN_FLIGHT,
    ) -> None:
        self._transport = transport
        self._base_url = base_url
        self._object_path = object_path
        self._configuration = configuration
        self._source = source
        self._reader = RangeReader(source.file)
        self._part_size = part_size
        self._bar = bar
        self._max_in_flight = max(1, max_in_flight)
        self._stop = threading.Event()

    def upload_parts(self) -> list[dict[str, Any]]:
        """Send every part; return the ``parts`` list for ``end``, in part order."""
        specs = plan_parts(self._source.size, self._part_size)
        workers = min(self._max_in_flight, len(specs))
        done: list[dict[str, Any]] = []
        # Every part is queued at once: a queued part holds no bytes, only its offsets.
        executor = ThreadPoolExecutor(workers, thread_name_prefix="gristmill-part")
        try:
            futures = [executor.submit(self._upload_part, spec) for spec in specs]
            finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in futures if f in finished and f.exception() is not None]
            if failed:
                raise _first_failure(failed)
            done = [f.result() for f in futures]
        except BaseException:
            # Another part failed, or Ctrl-C: running parts stop at their next piece.
            self._stop.set()
            raise
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
        if self._reader.read(self._source.size, 1):
            raise self._changed_size()
        return done

    def _upload_part(self, spec: PartSpec) -> dict[str, Any]:
        if self._stop.is_set():
            raise _Stopped("upload abandoned")
        request: dict[str, Any] = {
            "path_to_object": self._object_path,
            "multipart_upload_configuration": self._configuration,
            "chunk_size": self._part_size,
            "part_number": spec.number,
        }
        if spec.size < self._part_size:
            # Only a short final part carries the total size (contract §9.3).
            request["size"] = self._source.size
        presigned = expect_dict(
            self._transport.request(
                "POST", f"{self._base_url}/part", json=request, idempotent=True
            ),
            _PART_WHAT,
        )
        signed_url = expect_str(presigned, "signed_url", _PART_WHAT)
        headers = presigned.get("headers") or {}
        if not isinstance(headers, dict):
            raise InvalidResponseError(f"{_PART_WHAT} returned 'headers' that is not an object.")
        sent = 0
        lock = threading.Lock()

        def body() -> Iterator[bytes]:
            nonlocal sent
            # A retried part starts over: take back what the failed try reported.
            with lock:
                self._bar.advance(-sent)
                sent = 0
            position, end = spec.offset, spec.offset + spec.size
            while position < end:
                if self._stop.is_set():
                    raise _Stopped("upload abandoned")
                piece = self._reader.read(position, min(PIECE_B, end - position))
                if not piece:
                    raise self._changed_size()
                yield piece
                position += len(piece)
                with lock:
                    sent += len(piece)
                self._bar.advance(len(piece))

        # Unlike craft-ai-sdk, a refused part fails the upload here rather than at "end".
        response = self._transport.presigned(
            "PUT",
            signed_url,
            content=body,
            headers={
                **{str(k): str(v) for k, v in headers.items()},
                "Content-Length": str(spec.size),
            },
        )
        part: dict[str, Any] = {"number": spec.number}
        etag = response.headers.get("etag")
        if etag:
            # Kept verbatim, quotes included: S3 compares it as sent.
            part["metadata"] = etag
        return part

    def _changed_size(self) -> GristmillError:
        return GristmillError(
            f"{self._source.label} changed size during the upload (expected "
            f"{self._source.size} bytes); nothing was stored."
        )


def _first_failure(failed: list[Future[dict[str, Any]]]) -> BaseException:
    """The error to raise: a real failure rather than a part that stopped because of it."""
    errors = [f.exception() for f in failed]
    real = [e for e in errors if e is not None and not isinstance(e, _Stopped)]
    chosen = real[0] if real else errors[0]
    assert chosen is not None
    return chosen
