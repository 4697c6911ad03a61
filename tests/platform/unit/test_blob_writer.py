"""BlobWriter: the bytes received are the bytes on disk, whatever the chunking, for whole
uploads and for parts at an offset, written on the event loop or (once a write was slow)
through a worker thread; a disk error reaches the caller."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gristmill_platform.datastore.blobs import BUFFER_BYTES, BlobWriter


def chunks_of(data: bytes, sizes: list[int]) -> list[bytes]:
    out, position, index = [], 0, 0
    while position < len(data):
        size = sizes[index % len(sizes)]
        out.append(data[position:position + size])
        position += size
        index += 1
    return out


# slow_write_s=0: the first write counts as slow, every later one goes through the thread
MODES = pytest.mark.parametrize("slow_write_s", [60.0, 0.0], ids=["inline", "threaded"])


@MODES
@pytest.mark.parametrize("sizes", [
    [1],                                   # far smaller than a buffer
    [65_536, 300_000, 7],                  # uneven, crossing buffer boundaries
    [BUFFER_BYTES],                        # exactly a buffer each
    [3 * BUFFER_BYTES + 5],                # one chunk fills several buffers
])
async def test_writes_every_byte_in_order(tmp_path: Path, sizes: list[int],
                                          slow_write_s: float) -> None:
    data = os.urandom(2 * BUFFER_BYTES + 12_345) if sizes != [1] else os.urandom(5000)
    target = tmp_path / "blob"
    target.write_bytes(b"old content that must go")  # O_TRUNC: a whole upload replaces
    writer = await BlobWriter(target, slow_write_s=slow_write_s).open()
    for chunk in chunks_of(data, sizes):
        await writer.write(chunk)
    await writer.write(b"")
    await writer.close()
    assert writer.threaded == (slow_write_s == 0.0)
    assert writer.size == len(data)
    assert target.read_bytes() == data


@MODES
async def test_parts_at_offsets_assemble_one_file(tmp_path: Path, slow_write_s: float) -> None:
    part_size = BUFFER_BYTES + 1000
    data = os.urandom(part_size * 2 + 777)
    target = tmp_path / "blob"
    for number in (3, 1, 2):  # in any order, as multipart parts arrive
        start = (number - 1) * part_size
        writer = await BlobWriter(target, offset=start, slow_write_s=slow_write_s).open()
        for chunk in chunks_of(data[start:start + part_size], [70_000]):
            await writer.write(chunk)
        await writer.close()
        assert writer.size == len(data[start:start + part_size])
    assert target.read_bytes() == data


async def test_a_disk_error_is_raised_and_abort_closes(tmp_path: Path) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    writer = await BlobWriter(Path("/dev/full")).open()
    fd = writer._fd
    with pytest.raises(OSError) as raised:
        await writer.write(b"x" * 1000)
    assert raised.value.errno == 28  # ENOSPC
    writer.abort()
    assert writer._fd is None
    with pytest.raises(OSError):
        os.fstat(fd)  # type: ignore[arg-type]


async def test_a_disk_error_in_the_thread_is_raised_and_abort_closes(tmp_path: Path) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    writer = await BlobWriter(Path("/dev/null"), slow_write_s=0.0).open()
    await writer.write(b"x")  # "slow": threaded from now on
    assert writer.threaded
    # the same descriptor number now refers to /dev/full: the thread's writes fail
    full = os.open("/dev/full", os.O_WRONLY)
    assert writer._fd is not None
    os.dup2(full, writer._fd)
    os.close(full)
    fd = writer._fd
    with pytest.raises(OSError) as raised:
        for _ in range(4):  # the first full buffer's write fails; seen by the next flush
            await writer.write(b"x" * BUFFER_BYTES)
        await writer.close()
    assert raised.value.errno == 28  # ENOSPC
    writer.abort()
    assert fd is not None
    with pytest.raises(OSError):
        os.fstat(fd)  # closed (or, had the number been reused, not ours: never leaked)
