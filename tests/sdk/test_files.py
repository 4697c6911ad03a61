"""Local file handling: sources, the POST-policy form, atomic writes."""

from __future__ import annotations

import io
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path

import pytest

from gristmill._files import PostPolicyForm, atomic_write, open_source, read_exactly
from gristmill.errors import GristmillError


class Trickle(io.RawIOBase):
    """A non-seekable stream returning at most 3 bytes per read, like a pipe."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        n = min(3, len(buffer), len(self._data))
        buffer[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


def test_path_source(tmp_path: Path) -> None:
    file = tmp_path / "model.bin"
    file.write_bytes(b"12345")
    for given in (str(file), file):
        with open_source(given) as source:
            assert (source.size, source.filename) == (5, "model.bin")
            assert source.file.read() == b"12345"


def test_buffer_is_sent_from_its_start() -> None:
    buffer = io.BytesIO(b"abcdef")
    buffer.read(4)
    with open_source(buffer) as source:
        assert source.size == 6
        assert source.filename == "file"
        assert source.file.read() == b"abcdef"


def test_open_file_object_keeps_its_name(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_bytes(b"a,b")
    with (tmp_path / "data.csv").open("rb") as f, open_source(f) as source:
        assert (source.filename, source.size) == ("data.csv", 3)


def test_non_seekable_stream_is_spooled() -> None:
    with open_source(Trickle(b"0123456789")) as source:
        assert source.size == 10
        assert source.file.read() == b"0123456789"


def test_text_mode_is_refused_with_advice() -> None:
    with pytest.raises(TypeError, match="binary mode"), open_source(io.StringIO("x")):
        pass


def test_not_a_file_is_refused() -> None:
    with pytest.raises(ValueError, match="read"), open_source(42):  # type: ignore[arg-type]
        pass


def test_read_exactly_gathers_short_reads() -> None:
    stream = Trickle(b"0123456789")
    assert read_exactly(stream, 7) == b"0123456"  # type: ignore[arg-type]
    assert read_exactly(stream, 7) == b"789"  # type: ignore[arg-type]
    assert read_exactly(stream, 7) == b""  # type: ignore[arg-type]


def _parts(form: PostPolicyForm, body: bytes) -> list[tuple[str | None, str | None, bytes]]:
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {form.content_type}\r\n\r\n".encode() + body
    )
    return [
        (
            part.get_param("name", header="content-disposition"),
            part.get_filename(),
            part.get_payload(decode=True),
        )
        for part in message.iter_parts()  # type: ignore[attr-defined]
    ]


def test_post_policy_form_fields_first_then_the_file() -> None:
    with open_source(io.BytesIO(b"\x00payload\r\n--x")) as source:
        form = PostPolicyForm(
            {"key": "a/b.txt", "policy": "eyJ9", "x-amz-signature": "f00"}, source
        )
        events: list[object] = []
        body = b"".join(form.body(lambda: events.append("restart"), events.append))
    assert len(body) == form.content_length
    assert events == ["restart", 13]
    assert _parts(form, body) == [
        ("key", None, b"a/b.txt"),
        ("policy", None, b"eyJ9"),
        ("x-amz-signature", None, b"f00"),
        ("file", "file", b"\x00payload\r\n--x"),
    ]


def test_post_policy_form_replays_for_a_retry() -> None:
    with open_source(io.BytesIO(b"abc")) as source:
        form = PostPolicyForm({}, source)
        first = b"".join(form.body(lambda: None, lambda n: None))
        second = b"".join(form.body(lambda: None, lambda n: None))
    assert first == second


def test_post_policy_form_notices_a_file_changing_size(tmp_path: Path) -> None:
    file = tmp_path / "growing.log"
    file.write_bytes(b"abc")
    with open_source(file) as source:
        form = PostPolicyForm({}, source)
        file.write_bytes(b"abcdef")
        with pytest.raises(GristmillError, match="changed size"):
            b"".join(form.body(lambda: None, lambda n: None))


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"previous")
    with pytest.raises(RuntimeError), atomic_write(dest) as out:
        out.write(b"half")
        raise RuntimeError("interrupted")
    assert dest.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_write_replaces_on_success(tmp_path: Path) -> None:
    dest = tmp_path / "out.bin"
    with atomic_write(dest) as out:
        out.write(b"new")
    assert dest.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
