"""`gristmill backup` / `gristmill restore`: a running environment backed up while clients
write to it, restored into a fresh directory, started there, and everything in it used."""

from __future__ import annotations

import io
import json
import tarfile
import threading
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from gristmill.cli.app import app
from gristmill_platform.backup import MANIFEST, BackupError, create_backup, restore_backup
from gristmill_platform.settings import Settings
from tests.conftest import start_environment
from tests.platform.helpers import new_user_token
from tests.platform.stepkit import archive_of, write_folder
from tests.platform.test_deployments import call, endpoint, results
from tests.platform.test_runs import STEP_CODE, make_pipeline, outputs_of, run_and_wait

runner = CliRunner()


def flat(text: str) -> str:
    """The output without the line breaks rich adds at the terminal's width."""
    return " ".join(text.split())
CODE_IN = [{"name": "text", "data_type": "string"}]


def _put_object(api: httpx.Client, path: str, data: bytes) -> None:
    presigned = api.get("/data-store/upload", params={"path_to_object": path}).json()
    response = httpx.post(presigned["signed_url"], data=presigned["fields"],
                          files={"file": ("f", data)})
    assert response.status_code < 300, response.text


def _get_object(api: httpx.Client, path: str) -> bytes:
    signed = api.post("/data-store/download", data={"path_to_object": path})
    assert signed.status_code == 200, signed.text
    return httpx.get(signed.json()["signed_url"]).content


def _all_objects(api: httpx.Client) -> list[str]:
    paths: list[str] = []
    token = None
    while True:
        params = {"include_continuation_token": "True"}
        if token:
            params["continuation_token"] = token
        page = api.get("/data-store/list", params=params).json()
        paths += [o["path"] for o in page["items"]]
        token = page.get("continuation_token")
        if not token:
            return paths


def test_backup_under_load_restores_a_working_environment(tmp_path: Path) -> None:
    source_dir = tmp_path / "source"
    server, env, settings = start_environment(
        source_dir, f"sqlite:///{source_dir / 'gristmill.sqlite3'}")
    concurrent: dict[str, bytes] = {}
    try:
        archive = archive_of(write_folder(tmp_path / "code", {"src/steps.py": STEP_CODE}))
        with env.client() as api:
            pipeline = make_pipeline(api, archive, "echo-backup", "echo_async", CODE_IN,
                                     CODE_IN)
            ep = endpoint(api, pipeline, "ep-backup")
            endpoint(api, pipeline, "ep-second", description="second")
            execution_id, result = run_and_wait(api, pipeline, {"text": "before"})
            assert outputs_of(result) == {"text": "BEFORE"}
            for i in range(12):
                _put_object(api, f"before/{i}.bin", f"object {i}".encode() * 100)
            assert api.put("/environment-variables", json={
                "environment_variables": {"API_KEY": "kept-across-restore"}}).status_code == 200
        user_token = new_user_token(settings, "restored@example.com").plaintext

        # clients keep writing while the backup runs
        stop, writing = threading.Event(), threading.Event()
        errors: list[BaseException] = []

        def writer() -> None:
            try:
                write()
            except BaseException as exc:
                errors.append(exc)
                writing.set()

        def write() -> None:
            with env.client() as api:
                i = 0
                while not stop.is_set():
                    writing.set()
                    path = f"during/{i}.bin"
                    data = f"during {i}".encode() * 1000
                    _put_object(api, path, data)
                    concurrent[path] = data
                    # overwrites replace blobs: the backup must not lose the one it saw
                    _put_object(api, f"before/{i % 12}.bin", f"object {i % 12}".encode() * 100)
                    i += 1

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            assert writing.wait(timeout=30)
            summaries = []
            while len(summaries) < 3 or len(concurrent) < 10:
                summaries.append(create_backup(Settings(data_dir=source_dir),
                                               tmp_path / f"b{len(summaries)}.tar"))
        finally:
            stop.set()
            thread.join(timeout=60)
        assert not errors, errors
        # the last backup began after some of these writes and ran during others
        assert len(concurrent) >= 10
    finally:
        server.stop()

    backup = summaries[-1].path
    with tarfile.open(backup) as tar:
        manifest = json.loads(tar.extractfile(MANIFEST).read())  # type: ignore[union-attr]
        names = set(tar.getnames())
    assert "gristmill.sqlite3" in names and "secret.key" in names
    assert manifest["alembic_revision"] and all(
        "sha256" in f or "symlink" in f for f in manifest["files"].values())

    restored_dir = tmp_path / "restored"
    cli = runner.invoke(app, ["restore", str(backup), "--data-dir", str(restored_dir)])
    assert cli.exit_code == 0, cli.output
    assert (restored_dir / "secret.key").read_text() == (source_dir / "secret.key").read_text()
    server, restored, _ = start_environment(
        restored_dir, f"sqlite:///{restored_dir / 'gristmill.sqlite3'}")
    try:
        with restored.client() as api:
            assert pipeline in {p["pipeline_name"] for p in api.get("/pipelines").json()}
            deployments = {d["name"] for d in api.get("/deployments").json()}
            assert {"ep-backup", "ep-second"} <= deployments
            assert api.get(f"/executions/{execution_id}").json()["status"] == "Succeeded"
            variables = {v["name"]: v["value"]
                         for v in api.get("/environment-variables").json()}
            assert variables["API_KEY"] == "kept-across-restore"
            objects = _all_objects(api)
            for i in range(12):
                assert _get_object(api, f"before/{i}.bin") == f"object {i}".encode() * 100
            # what was written during the backup is there whole, or not at all
            during = [p for p in objects if p.startswith("during/")]
            for path in during:
                assert _get_object(api, path) == concurrent[path]
            # the restored environment works: a run, an endpoint call, a new object
            _, again = run_and_wait(api, pipeline, {"text": "after"})
            assert outputs_of(again) == {"text": "AFTER"}
            called = call(restored, "ep-backup", ep["endpoint_token"], {"text": "hi"})
            final = results(restored, "ep-backup", called.headers["craft-ai-execution-id"],
                            ep["endpoint_token"])
            assert final.json()["outputs"] == {"text": "HI"}
            _put_object(api, "after.bin", b"new")
            assert _get_object(api, "after.bin") == b"new"
        # a token made before the backup still works
        refreshed = httpx.post(f"{restored.url}/api/v1/auth/refresh",
                               json={"refresh_token": user_token})
        assert refreshed.status_code == 200
    finally:
        server.stop()


def test_restore_refuses_a_non_empty_dir_and_a_damaged_archive(tmp_path: Path) -> None:
    source = tmp_path / "env"
    assert runner.invoke(app, ["users", "create", "A", "a@example.com", "--data-dir",
                               str(source)]).exit_code == 0
    backup = tmp_path / "env.tar.gz"
    made = runner.invoke(app, ["backup", "--to", str(backup), "--data-dir", str(source)])
    assert made.exit_code == 0, made.output
    assert backup.stat().st_mode & 0o077 == 0

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    refused = runner.invoke(app, ["restore", str(backup), "--data-dir", str(busy)])
    assert refused.exit_code == 1 and "not empty" in flat(refused.output)
    assert sorted(p.name for p in busy.iterdir()) == ["keep.txt"]
    forced = runner.invoke(app, ["restore", str(backup), "--data-dir", str(busy), "--force"])
    assert forced.exit_code == 0, forced.output
    assert (busy / "gristmill.sqlite3").exists() and (busy / "keep.txt").exists()

    # a flipped byte in the database: the checksum catches it, nothing is written
    damaged = tmp_path / "damaged.tar"
    with tarfile.open(backup) as src, tarfile.open(damaged, "w") as dst:
        for member in src:
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "gristmill.sqlite3":
                data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
            dst.addfile(member, io.BytesIO(data))
    fresh = tmp_path / "fresh"
    with pytest.raises(BackupError, match="checksum mismatch"):
        restore_backup(damaged, fresh)
    assert not fresh.exists() or not any(fresh.iterdir())

    # a member the manifest does not list (a path traversal attempt) is refused
    evil = tmp_path / "evil.tar"
    with tarfile.open(backup) as src, tarfile.open(evil, "w") as dst:
        for member in src:
            dst.addfile(member, src.extractfile(member))
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 1
        dst.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(BackupError, match="does not list"):
        restore_backup(evil, tmp_path / "fresh2")
    assert not (tmp_path / "escaped.txt").exists()
    not_a_backup = tmp_path / "x.tar"
    not_a_backup.write_bytes(b"garbage")
    assert "not a readable backup" in flat(runner.invoke(
        app, ["restore", str(not_a_backup), "--data-dir", str(tmp_path / "f3")]).output)


def _rewritten(backup: Path, out: Path, extra: list[tuple[tarfile.TarInfo, bytes | None]],
               manifest: object | bytes | None = None) -> Path:
    """The backup with members added (listed in its manifest, with their checksums, as a
    careful forger would) or its manifest replaced."""
    import hashlib

    with tarfile.open(backup) as src:
        members = [(m, src.extractfile(m).read() if m.isfile() else None)  # type: ignore
                   for m in src]
    original = json.loads(next(data for m, data in members if m.name == MANIFEST))
    for info, data in extra:
        original["files"][info.name] = (
            {"symlink": info.linkname} if info.issym()
            else {"sha256": hashlib.sha256(data or b"").hexdigest(), "size": len(data or b""),
                  "mode": 0o600})
    raw = manifest if isinstance(manifest, bytes) else json.dumps(
        original if manifest is None else manifest).encode()
    with tarfile.open(out, "w") as dst:
        for member, data in [*[(m, d) for m, d in members if m.name != MANIFEST], *extra]:
            if member.issym():
                dst.addfile(member)
            else:
                member.size = len(data or b"")
                dst.addfile(member, io.BytesIO(data or b""))
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(raw)
        dst.addfile(info, io.BytesIO(raw))
    return out


def test_restore_never_writes_through_a_link_or_trusts_a_broken_manifest(
        tmp_path: Path) -> None:
    source = tmp_path / "env"
    assert runner.invoke(app, ["users", "create", "A", "a@example.com", "--data-dir",
                               str(source)]).exit_code == 0
    backup = tmp_path / "env.tar"
    assert runner.invoke(app, ["backup", "--to", str(backup), "--data-dir",
                               str(source)]).exit_code == 0
    outside = tmp_path / "outside"
    outside.mkdir()

    # an environment's link may point anywhere (bin/python); nothing may go through it
    link = tarfile.TarInfo("venvs/evil")
    link.type, link.linkname = tarfile.SYMTYPE, str(outside)
    payload = b"written outside"
    through = tarfile.TarInfo("venvs/evil/pwned.txt")
    escape = _rewritten(backup, tmp_path / "escape.tar", [(link, None), (through, payload)])
    with pytest.raises(BackupError, match="through the link venvs/evil"):
        restore_backup(escape, tmp_path / "t1")
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "t1").exists() or not any((tmp_path / "t1").iterdir())
    # nor over it: an entry of the same name as one written before
    twice = _rewritten(backup, tmp_path / "twice.tar", [(link, None), (link, None)])
    with pytest.raises(BackupError, match="twice"):
        restore_backup(twice, tmp_path / "t2")
    assert list(outside.iterdir()) == []

    # a manifest cut short or edited: a clear refusal (the CLI's message), nothing written
    for number, manifest in enumerate((b'{"format": "grist', {"format": "gristmill-backup"},
                                       [1, 2])):
        bad = _rewritten(backup, tmp_path / f"manifest{number}.tar", [], manifest)
        target = tmp_path / f"m{number}"
        result = runner.invoke(app, ["restore", str(bad), "--data-dir", str(target)])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert "nothing was restored" in flat(result.output) or "not a Gristmill" in flat(
            result.output), result.output
        assert not target.exists() or not any(target.iterdir())


def test_a_data_store_file_deleted_while_it_is_copied_takes_a_new_snapshot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshot named the file; once it is gone, the snapshot no longer describes the
    store: the backup takes another rather than leave the file out (a restored object
    that answered 500)."""
    from gristmill_platform import backup as backup_module

    server, env, _ = start_environment(tmp_path / "env", None)
    try:
        with env.client() as api:
            _put_object(api, "keep/a.bin", b"a" * 100)
            _put_object(api, "gone/b.bin", b"b" * 100)
            deleted = []
            real_add = backup_module._add

            def add(archive: tarfile.TarFile, item: backup_module._Source) -> object:
                # the first time a data store file is copied, the object is deleted
                if item.name.startswith("datastore/") and not deleted:
                    assert api.request("DELETE", "/data-store/delete", json={
                        "path_to_object": "gone/b.bin"}).status_code == 200
                    deleted.append(item.name)
                return real_add(archive, item)

            monkeypatch.setattr(backup_module, "_add", add)
            summary = create_backup(Settings(data_dir=tmp_path / "env"), tmp_path / "b.tar")
    finally:
        server.stop()
    with tarfile.open(summary.path) as archive:
        manifest = json.loads(archive.extractfile(MANIFEST).read())  # type: ignore[union-attr]
    blobs = [name for name in manifest["files"] if name.startswith("datastore/")]
    assert len(blobs) == 1  # the snapshot taken after the delete: one object, its file kept
    restored = tmp_path / "restored"
    restore_backup(summary.path, restored)
    server, env, _ = start_environment(restored, None)
    try:
        with env.client() as api:
            assert _all_objects(api) == ["keep/a.bin"]
            assert _get_object(api, "keep/a.bin") == b"a" * 100
    finally:
        server.stop()


@pytest.mark.parametrize("args, fragment", [
    (["--database-url", "postgresql://u@127.0.0.1:5432/x"], "pg_dump"),
])
def test_backup_refuses_postgresql_with_the_native_procedure(tmp_path, args, fragment) -> None:
    result = runner.invoke(app, ["backup", "--to", str(tmp_path / "b.tar"),
                                 "--data-dir", str(tmp_path), *args])
    assert result.exit_code == 1 and fragment in flat(result.output)
    assert "docs/operations.md" in flat(result.output)
    assert not (tmp_path / "b.tar").exists()


def test_backup_refuses_s3(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GRISTMILL_DATASTORE_BACKEND", "s3")
    result = runner.invoke(app, ["backup", "--to", str(tmp_path / "b.tar"),
                                 "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "bucket versioning" in flat(result.output)
