"""A run on the S3 data store, end to end on a local worker: the step's archive, a file
input sent with the run, a file input mapped from the data store and a file output mapped
to it."""

from __future__ import annotations

import httpx
import pytest

from tests.datastore_conformance.helpers import download, information, upload
from tests.platform.stepkit import archive_of, write_folder
from tests.platform.test_runs import make_pipeline, outputs_of, run_and_wait

STEP_CODE = '''
import os


def files(doc: dict, suffix: str) -> dict:
    with open(doc["path"], "rb") as handle:
        data = handle.read()
    out = os.path.join(os.environ["GRISTMILL_IO_DIR"], "result.bin")
    with open(out, "wb") as handle:
        handle.write(data + suffix.encode())
    return {"result": {"path": out}, "size": len(data)}


def write(text: str) -> dict:
    out = os.path.join(os.environ["GRISTMILL_IO_DIR"], "written.txt")
    with open(out, "w") as handle:
        handle.write(text)
    return {"result": {"path": out}}
'''

# On S3 the runtime route of a file input answers a 307 to a presigned GET: the bytes go
# straight from the store to the worker, which follows the redirect without Authorization.


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> bytes:
    return archive_of(write_folder(tmp_path_factory.mktemp("s3-step"),
                                   {"src/steps.py": STEP_CODE}))


@pytest.fixture(scope="module")
def pipeline(s3_store, archive) -> str:
    with s3_store.env.client() as api:
        return make_pipeline(api, archive, "s3-files", "files",
                             [{"name": "doc", "data_type": "file"},
                              {"name": "suffix", "data_type": "string"}],
                             [{"name": "result", "data_type": "file"},
                              {"name": "size", "data_type": "number"}])


def test_step_archive_lives_in_the_bucket_and_downloads(s3_api, s3_store, moto, pipeline
                                                         ) -> None:
    keys = [o["Key"] for o in moto.client().list_objects_v2(
        Bucket=s3_store.bucket, Prefix="env-a/.gristmill/")["Contents"]]
    assert keys, "the step archive is stored under the internal prefix"
    signed = s3_api.get(f"/pipelines/{pipeline}/download")
    assert signed.status_code == 200, signed.text
    archive = httpx.get(signed.json()["signed_url"])
    assert archive.status_code == 200 and archive.content[:2] == b"\x1f\x8b"  # gzip


def test_file_output_mapped_to_the_data_store(s3_api, archive, unique) -> None:
    name = make_pipeline(s3_api, archive, f"s3-write-{unique}", "write",
                         [{"name": "text", "data_type": "string"}],
                         [{"name": "result", "data_type": "file"}])
    execution_id, result = run_and_wait(
        s3_api, name, {"text": "written on S3"},
        outputs_mapping=[{"pipeline_output_name": "result",
                          "datastore_path": f"written-{unique}/{{execution_id}}.txt"}])
    assert result.status_code == 200, result.text
    target = f"written-{unique}/{execution_id}.txt"
    assert download(s3_api, target).content == b"written on S3"
    # the execution's own copy is served by a redirect to a presigned URL
    output = s3_api.get(f"/executions/{execution_id}/outputs/result")
    assert output.status_code == 307
    assert httpx.get(output.headers["location"]).content == b"written on S3"


def test_file_input_sent_with_the_run(s3_api, pipeline) -> None:
    execution_id, result = run_and_wait(s3_api, pipeline, {"suffix": "!"},
                                        files={"doc": ("doc.txt", b"hello")})
    assert outputs_of(result)["size"] == 5
    output = s3_api.get(f"/executions/{execution_id}/outputs/result", follow_redirects=True)
    assert output.content == b"hello!"
    given = s3_api.get(f"/executions/{execution_id}/inputs/doc", follow_redirects=True)
    assert given.content == b"hello"


def test_data_store_mappings(s3_api, pipeline, unique) -> None:
    upload(s3_api, f"in-{unique}.txt", b"from store")
    execution_id, result = run_and_wait(
        s3_api, pipeline, {"suffix": "?"},
        inputs_mapping=[{"pipeline_input_name": "doc", "datastore_path": f"in-{unique}.txt"}],
        outputs_mapping=[{"pipeline_output_name": "result",
                          "datastore_path": f"out-{unique}/{{execution_id}}.bin"}])
    assert result.status_code == 200, result.text
    target = f"out-{unique}/{execution_id}.bin"
    assert information(s3_api, target).json()["size"] == len(b"from store?")
    assert download(s3_api, target).content == b"from store?"
    listed = [i["path"] for i in s3_api.get("/data-store/list").json()["items"]]
    assert target in listed and not [p for p in listed if p.startswith(".gristmill")]
