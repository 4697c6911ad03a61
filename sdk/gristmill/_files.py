"""Local file helpers for transfers: opening what the user passed (a path or a binary
file object) without loading it in memory, and streaming an S3 POST-policy form."""

from __future__ import annotations

import io
import os
import secrets
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeAlias

from gristmill.errors import GristmillError

PathOrBuffer: TypeAlias = "str | os.PathLike[str] | IO[bytes]"

READ_CHUNK_B = 1024 * 1024
# Below this, a non-seekable stream is buffered in memory; above, it spills to a temp file.
SPOOL_MEMORY_B = 8 * 1024 * 1024


@dataclass
class Source:
    file: IO[bytes]
    size: int
    # The file name the POST-policy form announces, as requests/craft-ai-sdk do.
    filename: str
    label: str


def _seekable(file: Any) -> bool:
    seekable = getattr(file, "seekable", None)
    if callable(seekable):
        try:
            return bool(seekable())
        except (OSError, ValueError):
            return False
    return callable(getattr(file, "seek", None)) and callable(getattr(file, "tell", None))


def _buffer_name(file: Any) -> str | None:
    name = getattr(file, "name", None)
    if isinstance(name, str) and name and not (name.startswith("<") and name.endswith(">")):
        return os.path.basename(name)
    return None


@contextmanager
def open_source(filepath_or_buffer: PathOrBuffer) -> Iterator[Source]:
    """A readable, seekable binary source positioned at 0, with its size."""
    if isinstance(filepath_or_buffer, str | os.PathLike):
        path = Path(os.fspath(filepath_or_buffer))
        with path.open("rb") as opened:
            yield Source(opened, os.fstat(opened.fileno()).st_size, path.name, path.name)
        return

    file = filepath_or_buffer
    if not callable(getattr(file, "read", None)):
        raise ValueError(
            "'filepath_or_buffer' must be either a path (str or pathlib.Path) or a file-like "
            "object with a read() method, opened in binary mode."
        )
    if isinstance(file, io.TextIOBase):
        raise TypeError(
            "The file object is opened in text mode; open it in binary mode, e.g. "
            "open(path, 'rb'), or pass io.BytesIO(...) instead of io.StringIO(...)."
        )
    name = _buffer_name(file)
    filename = name or "file"
    label = name or "buffer"
    if _seekable(file):
        # Like craft-ai-sdk, a buffer is always sent from its start, whatever its position.
        file.seek(0, os.SEEK_END)
        size = file.tell()
        file.seek(0)
        yield Source(file, size, filename, label)
        return

    # A pipe or socket: we need the size up front (S3 refuses chunked uploads) and the
    # ability to re-read for retries, so copy it to a spool file first.
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_B) as spool:
        while True:
            chunk = file.read(READ_CHUNK_B)
            if not chunk:
                break
            if isinstance(chunk, str):
                raise TypeError("The file object returns text; open it in binary mode ('rb').")
            spool.write(chunk)
        size = spool.tell()
        spool.seek(0)
        yield Source(spool, size, filename, label)


def read_exactly(file: IO[bytes], size: int) -> bytes:
    """Read ``size`` bytes unless EOF comes first (raw streams may return short reads)."""
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = file.read(remaining)
        if not chunk:
            break
        if isinstance(chunk, str):
            raise TypeError("The file object returns text; open it in binary mode ('rb').")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


class RangeReader:
    """Reads byte ranges of a source from several threads at once (parallel part uploads).

    A regular file is read with ``os.pread``: no shared position, no lock, and the GIL is
    released during the read. Any other seekable object (``BytesIO``, a spool...) is read
    under a lock, since seek-then-read is not atomic.
    """

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self._fd = _regular_file_descriptor(file)
        self._lock = threading.Lock()

    def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset``; shorter only at end of file."""
        if self._fd is None:
            with self._lock:
                self._file.seek(offset)
                return read_exactly(self._file, size)
        chunks: list[bytes] = []
        remaining = size
        while remaining > 0:
            chunk = os.pread(self._fd, remaining, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
            remaining -= len(chunk)
        # join() of a single bytes object returns it as is: no copy in the common case.
        return b"".join(chunks)


def _regular_file_descriptor(file: IO[bytes]) -> int | None:
    # fileno() on a SpooledTemporaryFile would force it to disk; it is read under the lock.
    if isinstance(file, tempfile.SpooledTemporaryFile):
        return None
    try:
        fd = file.fileno()
        return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except (AttributeError, OSError, ValueError):
        return None


def _quote_form_name(value: str) -> str:
    # The HTML5 rule for names in multipart/form-data headers.
    return value.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class PostPolicyForm:
    """``multipart/form-data`` body for an S3 POST policy: the policy fields, then the
    ``file`` part last (S3 ignores fields after it). Streamed from the source, with an exact
    Content-Length since S3 rejects chunked uploads."""

    def __init__(self, fields: Mapping[str, Any], source: Source) -> None:
        self._source = source
        self.boundary = secrets.token_hex(16)
        head = bytearray()
        for key, value in fields.items():
            head += (
                f"--{self.boundary}\r\n"
                f'Content-Disposition: form-data; name="{_quote_form_name(str(key))}"\r\n\r\n'
            ).encode()
            head += str(value).encode() + b"\r\n"
        head += (
            f"--{self.boundary}\r\n"
            'Content-Disposition: form-data; name="file"; '
            f'filename="{_quote_form_name(source.filename)}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self._head = bytes(head)
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def content_length(self) -> int:
        return len(self._head) + self._source.size + len(self._tail)

    def body(
        self, on_restart: Callable[[], None], on_bytes: Callable[[int], None]
    ) -> Iterator[bytes]:
        """One pass over the body; call again to replay it for a retry."""
        on_restart()
        self._source.file.seek(0)
        yield self._head
        sent = 0
        while True:
            chunk = self._source.file.read(READ_CHUNK_B)
            if not chunk:
                break
            sent += len(chunk)
            if sent > self._source.size:
                break
            yield chunk
            on_bytes(len(chunk))
        if sent != self._source.size:
            raise GristmillError(
                f"{self._source.label} changed size during the upload "
                f"(expected {self._source.size} bytes, read {sent}); nothing was stored."
            )
        yield self._tail


def temporary_sibling(dest: Path) -> Path:
    """A fresh hidden path next to ``dest``, on the same filesystem so a rename is atomic."""
    return dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.gristmill-part")


def check_file_destination(dest: Path, example_name: str | None = None) -> None:
    """Refuse, before any transfer, a path that cannot become the downloaded file: a
    folder, or a file in a folder that does not exist. The errors name the path as the
    user gave it (not the hidden temporary file the bytes first go to)."""
    shown = str(dest)
    error: OSError | None = None
    if dest.is_dir():
        example = f" such as {str(dest / example_name)!r}" if example_name else ""
        error = IsADirectoryError(
            f"Cannot download to {shown!r}: it is a folder. Give the path of the file to "
            f"write{example}."
        )
    elif not dest.parent.exists():
        error = FileNotFoundError(
            f"Cannot download to {shown!r}: the folder {str(dest.parent)!r} does not exist; "
            "create it first."
        )
    elif not dest.parent.is_dir():
        error = NotADirectoryError(
            f"Cannot download to {shown!r}: {str(dest.parent)!r} is not a folder."
        )
    if error is not None:
        raise error


@contextmanager
def atomic_write(dest: Path) -> Iterator[IO[bytes]]:
    """Write to a temp file and rename it over ``dest`` only on success.

    No fsync: it made a 1 GiB download wait for the whole disk writeback (half the
    throughput, bench/datastore.py). An interrupted or failed download still never
    replaces ``dest``; only an OS crash right after the rename could lose the new bytes,
    and ext4/btrfs/xfs flush a file renamed over another. Like curl, the AWS CLI and
    huggingface_hub.
    """
    tmp = temporary_sibling(dest)
    # "xb" (not mkstemp) so the file gets the user's umask, like a plain open() would.
    try:
        with tmp.open("xb") as out:
            yield out
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_buffer_write(buffer: IO[bytes]) -> Iterator[IO[bytes]]:
    """Collect into a spool and copy to ``buffer`` only on success, so a failed download
    never leaves part of an object in the caller's buffer."""
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_B) as spool:
        yield spool
        spool.seek(0)
        shutil.copyfileobj(spool, buffer, READ_CHUNK_B)
