"""Data store: the environment's object storage (wire contract §9).

Transfers go straight to presigned URLs (S3, MinIO or the control service's own store),
streamed from and to disk. Sizes are returned as integers (bytes), where craft-ai-sdk
returns a human string such as ``"2.00 KB"``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from gristmill._files import (
    PathOrBuffer,
    PostPolicyForm,
    Source,
    atomic_buffer_write,
    atomic_write,
    check_file_destination,
    open_source,
)
from gristmill.errors import InvalidResponseError
from gristmill.resources._base import ClientBase, expect_dict, expect_list, expect_str
from gristmill.resources._multipart import MultipartUploader


class DataStoreMixin(ClientBase):
    # -- metadata --

    def get_data_store_object_information(self, object_path_in_datastore: str) -> dict[str, Any]:
        """Information about one object.

        Returns:
            dict with ``path`` (str), ``last_modified`` (ISO 8601 str) and ``size``
            (int, bytes).

        Raises:
            NotFoundError: there is no object at this path.
        """
        return expect_dict(
            self._transport.request(
                "POST",
                self._api_url("/data-store/information"),
                json={"path_to_object": object_path_in_datastore},
                idempotent=True,
            ),
            "POST /data-store/information",
        )

    def iter_data_store_objects(self) -> Iterator[dict[str, Any]]:
        """Every object of the data store, fetched page by page as you iterate.

        Yields:
            dicts with ``path``, ``last_modified`` and ``size`` (int, bytes).
        """
        url = self._api_url("/data-store/list")
        seen: set[str] = set()
        token: str | None = None
        while True:
            params = {"include_continuation_token": "t"}
            if token:
                params["continuation_token"] = token
            page = expect_dict(
                self._transport.request("GET", url, params=params), "GET /data-store/list"
            )
            yield from expect_list(page.get("items"), "GET /data-store/list (items)")
            next_token = page.get("continuation_token")
            if not next_token:
                return
            if not isinstance(next_token, str) or next_token in seen:
                # Following it would loop forever.
                raise InvalidResponseError(
                    "GET /data-store/list returned an invalid or repeated continuation token."
                )
            seen.add(next_token)
            token = next_token

    def list_data_store_objects(self) -> list[dict[str, Any]]:
        """The list of every object of the data store (all pages).

        Returns:
            list of dicts with ``path`` (str), ``last_modified`` (ISO 8601 str) and
            ``size`` (int, bytes). Use ``iter_data_store_objects()`` to stream a large
            store instead.
        """
        return list(self.iter_data_store_objects())

    def delete_data_store_object(self, object_path_in_datastore: str) -> dict[str, Any]:
        """Delete an object.

        Returns:
            The deleted object as a dict with ``path``.

        Raises:
            NotFoundError: there is no object at this path.
        """
        return expect_dict(
            self._transport.request(
                "DELETE",
                self._api_url("/data-store/delete"),
                # A form body on DELETE: that is what the contract (and craft-ai-sdk) sends.
                data={"path_to_object": object_path_in_datastore},
            ),
            "DELETE /data-store/delete",
        )

    # -- upload --

    def upload_data_store_object(
        self, filepath_or_buffer: PathOrBuffer, object_path_in_datastore: str
    ) -> None:
        """Upload a file, or a binary file object, to the data store.

        Objects from ``multipart_threshold`` bytes on (100 MB by default) are sent in
        parts of ``multipart_part_size`` bytes. The file is streamed, never loaded whole
        in memory. A file object is always sent from its start.

        Args:
            filepath_or_buffer: A path (str or ``pathlib.Path``), or a file object opened
                in binary mode (``open(path, "rb")``, ``io.BytesIO(...)``).
            object_path_in_datastore: Destination path in the data store.
        """
        with open_source(filepath_or_buffer) as source:
            if source.size < self._settings.multipart_threshold:
                self._upload_single_part(source, object_path_in_datastore)
            else:
                self._upload_multipart(source, object_path_in_datastore)

    def _upload_single_part(self, source: Source, object_path: str) -> None:
        what = "GET /data-store/upload"
        presigned = expect_dict(
            self._transport.request(
                "GET", self._api_url("/data-store/upload"), params={"path_to_object": object_path}
            ),
            what,
        )
        signed_url = expect_str(presigned, "signed_url", what)
        fields = presigned.get("fields")
        if not isinstance(fields, dict):
            raise InvalidResponseError(f"{what} returned no 'fields' object.")
        form = PostPolicyForm(fields, source)
        with self._progress(f"Uploading {source.label}", source.size) as bar:
            self._transport.presigned(
                "POST",
                signed_url,
                content=lambda: form.body(bar.restart, bar.advance),
                headers={
                    "Content-Type": form.content_type,
                    "Content-Length": str(form.content_length),
                },
            )

    def _upload_multipart(self, source: Source, object_path: str) -> None:
        base = self._api_url("/data-store/upload/multipart")
        # Opaque to the client (an S3 upload id, a GCS session URI...): echoed back as is.
        configuration = self._transport.request("POST", base, json={"path_to_object": object_path})
        with self._progress(f"Uploading {source.label}", source.size) as bar:
            parts = MultipartUploader(
                self._transport,
                base,
                object_path,
                configuration,
                source,
                self._settings.multipart_part_size,
                bar,
            ).upload_parts()
        self._transport.request(
            "POST",
            f"{base}/end",
            json={
                "path_to_object": object_path,
                "multipart_upload_configuration": configuration,
                "parts": parts,
            },
        )

    # -- download --

    def download_data_store_object(
        self, object_path_in_datastore: str, filepath_or_buffer: PathOrBuffer
    ) -> None:
        """Download an object to a file, or into a binary file object.

        The object is streamed. A file path is written through a temporary file renamed
        at the end, so an interrupted download leaves no partial file; a buffer receives
        the bytes only once they have all arrived.

        Args:
            object_path_in_datastore: Path of the object in the data store.
            filepath_or_buffer: The path of the file to write (str or ``pathlib.Path``;
                replaced if it exists), or a file object opened in binary mode for
                writing.

        Raises:
            NotFoundError: there is no object at this path.
            IsADirectoryError: ``filepath_or_buffer`` is a folder (checked before the
                transfer; give the file's path, e.g. ``"downloads/iris.csv"``).
            FileNotFoundError: the folder of ``filepath_or_buffer`` does not exist.
        """
        if not isinstance(filepath_or_buffer, str | os.PathLike) and not callable(
            getattr(filepath_or_buffer, "write", None)
        ):
            raise ValueError(
                "'filepath_or_buffer' must be either a path (str or pathlib.Path) or a "
                "file-like object with a write() method, opened in binary mode."
            )
        if isinstance(filepath_or_buffer, io.TextIOBase):
            raise TypeError("The file object is opened in text mode; open it with 'wb'.")
        label = object_path_in_datastore.rsplit("/", 1)[-1] or object_path_in_datastore
        if isinstance(filepath_or_buffer, str | os.PathLike):
            check_file_destination(Path(os.fspath(filepath_or_buffer)), label)

        what = "POST /data-store/download"
        presigned = expect_dict(
            self._transport.request(
                "POST",
                self._api_url("/data-store/download"),
                # Form-encoded, not JSON: that is what the contract specifies for this route.
                data={"path_to_object": object_path_in_datastore},
                idempotent=True,
            ),
            what,
        )
        signed_url = expect_str(presigned, "signed_url", what)

        if isinstance(filepath_or_buffer, str | os.PathLike):
            with atomic_write(Path(os.fspath(filepath_or_buffer))) as out:
                self._download_to(signed_url, out, label)
            return
        buffer = filepath_or_buffer
        with atomic_buffer_write(buffer) as out:
            self._download_to(signed_url, out, label)
        # craft-ai-sdk rewinds the buffer so that it can be read at once.
        if isinstance(buffer, io.IOBase) and buffer.seekable() and buffer.tell() > 0:
            buffer.seek(0)

    def _download_to(self, signed_url: str, out: IO[bytes], label: str) -> None:
        # identity: the bytes stored, not a recompressed stream whose size differs.
        with self._transport.stream_presigned(
            "GET", signed_url, headers={"Accept-Encoding": "identity"}
        ) as response:
            length = response.headers.get("content-length")
            total = int(length) if length and length.isdigit() else None
            with self._progress(f"Downloading {label}", total) as bar:
                for chunk in self._transport.iter_body(response):
                    out.write(chunk)
                    bar.advance(len(chunk))
