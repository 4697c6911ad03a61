"""Raw-HTTP helpers for the data store routes (contract §9)."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree

import httpx

MIB = 1024 * 1024
# S3 refuses non-final parts under 5 MiB; the local backend takes any size.
PART = 5 * MIB


def upload(api: httpx.Client, path: str, data: bytes) -> httpx.Response:
    presigned = api.get("/data-store/upload", params={"path_to_object": path})
    assert presigned.status_code == 200, presigned.text
    body = presigned.json()
    return httpx.post(body["signed_url"], data=body["fields"], files={"file": ("f", data)},
                      timeout=60)


def download(api: httpx.Client, path: str) -> httpx.Response:
    signed = api.post("/data-store/download", data={"path_to_object": path})
    assert signed.status_code == 200, signed.text
    return httpx.get(signed.json()["signed_url"], timeout=60)


def information(api: httpx.Client, path: str) -> httpx.Response:
    return api.post("/data-store/information", json={"path_to_object": path})


def delete(api: httpx.Client, path: str) -> httpx.Response:
    return api.request("DELETE", "/data-store/delete", data={"path_to_object": path})


def list_pages(api: httpx.Client, *, max_pages: int = 200) -> list[list[str]]:
    """Every page, following tokens; bounded so a token loop fails instead of hanging."""
    pages: list[list[str]] = []
    token = None
    for _ in range(max_pages):
        params = {"include_continuation_token": "true"}
        if token:
            params["continuation_token"] = token
        response = api.get("/data-store/list", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([item["path"] for item in body["items"]])
        token = body["continuation_token"]
        if not token:
            return pages
    raise AssertionError(f"listing did not end within {max_pages} pages")


def s3_error(response: httpx.Response) -> dict[str, str]:
    root = ElementTree.fromstring(response.content)
    return {child.tag: child.text or "" for child in root}


def start_multipart(api: httpx.Client, path: str) -> Any:
    response = api.post("/data-store/upload/multipart", json={"path_to_object": path})
    assert response.status_code == 200, response.text
    return response.json()


def sign_part(api: httpx.Client, path: str, config: Any, number: int, chunk_size: int,
              size: int | None = None) -> httpx.Response:
    body: dict[str, Any] = {"path_to_object": path, "multipart_upload_configuration": config,
                            "chunk_size": chunk_size, "part_number": number}
    if size is not None:
        body["size"] = size
    return api.post("/data-store/upload/multipart/part", json=body)


def put_part(api: httpx.Client, path: str, config: Any, number: int, chunk: bytes,
             chunk_size: int, size: int | None = None) -> httpx.Response:
    signed = sign_part(api, path, config, number, chunk_size, size)
    assert signed.status_code == 200, signed.text
    return httpx.put(signed.json()["signed_url"], content=chunk,
                     headers=signed.json()["headers"], timeout=60)


def end_multipart(api: httpx.Client, path: str, config: Any,
                  parts: list[dict[str, Any]]) -> httpx.Response:
    return api.post("/data-store/upload/multipart/end", json={
        "path_to_object": path, "multipart_upload_configuration": config, "parts": parts})
