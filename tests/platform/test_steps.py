"""Steps and pipelines over HTTP: creation from a folder or Git, rejections, lifecycle."""

from __future__ import annotations

import io
import os
import tarfile

import httpx
import pytest

from tests.platform.stepkit import (
    HELLO,
    archive_of,
    git_repo,
    post_step,
    step_form,
    write_folder,
)
from tests.platform.test_auth import assert_error

STRING_IO = {"inputs": [{"name": "name", "data_type": "string", "is_required": "False",
                         "default_value": "world"}],
             "outputs": [{"name": "greeting", "data_type": "string"}]}


@pytest.fixture
def hello_archive(tmp_path) -> bytes:
    return archive_of(write_folder(tmp_path / "step", {"src/hello.py": HELLO}))


def test_create_from_folder_get_list_download_delete(api, unique, hello_archive) -> None:
    name = f"hello-{unique}"
    response = post_step(api, step_form(name, **STRING_IO), hello_archive)
    assert response.status_code == 201, response.text
    step = response.json()
    assert step["creation_info"]["status"] == "ready"
    assert step["creation_info"]["origin"] == "local"
    assert step["parameters"]["inputs"][0] == {
        "name": "name", "data_type": "string", "description": None, "is_required": False,
        "default_value": "world"}
    assert step["parameters"]["container_config"]["language"].startswith("python:3.")
    assert api.get(f"/steps/{name}").json()["parameters"]["step_name"] == name
    assert name in {s["step_name"] for s in api.get("/steps").json()}
    signed = api.get(f"/steps/{name}/download").json()["signed_url"]
    downloaded = httpx.get(signed)
    assert downloaded.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(downloaded.content), mode="r:gz") as tar:
        assert "src/hello.py" in tar.getnames()
    assert api.delete(f"/steps/{name}").json()["step_name"] == name
    assert api.get(f"/steps/{name}").status_code == 404


def test_default_values_are_typed_from_the_form(api, unique, hello_archive) -> None:
    inputs = [{"name": "n", "data_type": "number", "default_value": "3"},
              {"name": "flag", "data_type": "boolean", "default_value": "False"},
              {"name": "cfg", "data_type": "json", "default_value": {"k": ["1", "2.5"]}},
              {"name": "req", "data_type": "string", "is_required": "True"}]
    step = post_step(api, step_form(f"typed-{unique}", inputs=inputs), hello_archive).json()
    declared = {i["name"]: i for i in step["parameters"]["inputs"]}
    assert declared["n"]["default_value"] == 3
    assert declared["flag"]["default_value"] is False
    assert declared["cfg"]["default_value"] == {"k": [1, 2.5]}
    assert declared["req"]["is_required"] is True


@pytest.mark.parametrize(
    ("change", "status", "fragment"),
    [
        ({"name": "bad name!"}, 400, "Invalid step name"),
        ({"function_path": "src/hello.txt"}, 400, "must be a Python file"),
        ({"function_path": "../outside.py"}, 400, "inside the step's folder"),
        ({"function_name": "not-an-identifier"}, 400, "function_name"),
        ({"inputs": [{"name": "x", "data_type": "image"}]}, 400, "unknown data_type"),
        ({"inputs": [{"name": "x"}, {"name": "x"}]}, 400, "Duplicate input"),
        ({"inputs": [{"name": "class"}]}, 400, "Python keyword"),
        ({"inputs": [{"name": "f", "data_type": "file", "default_value": "x"}]}, 400,
         "cannot have a default"),
        ({"inputs": [{"name": "n", "data_type": "number", "default_value": "abc"}]}, 400,
         "must be a number"),
        # a float with no JSON form: it was stored, then every answer showing it failed
        *(({"inputs": [{"name": "n", "data_type": "number", "default_value": text}]}, 400,
           "must be a finite number") for text in ("1e999", "nan", "-inf")),
        ({"container_config": {"language": "python:2.7-slim"}}, 400, "python:3."),
        ({"container_config": {"dockerfile_path": "Dockerfile"}}, 400, "Kubernetes backend"),
        ({"container_config": {"nonsense": "x"}}, 400, "Unknown container_config"),
    ],
)
def test_creation_rejections(api, unique, hello_archive, change, status, fragment) -> None:
    kwargs = {k: v for k, v in change.items() if k != "name"}
    name = change.get("name", f"rej-{unique}")
    assert_error(post_step(api, step_form(name, **kwargs), hello_archive), status, fragment)
    assert api.get(f"/steps/rej-{unique}").status_code == 404  # nothing half-created


def test_a_creation_cut_short_is_refused(api, unique, hello_archive) -> None:
    """Its code archive never ended: nothing may be built from the part that came."""
    request = httpx.Request("POST", "http://x/", data=dict(step_form(f"cut-{unique}")),
                            files={"step_file": ("step_file", hello_archive)})
    whole = request.read()
    cut = whole[:whole.rindex(b"\r\n--")]  # all but the closing boundary
    response = api.post("/steps", content=cut,
                        headers={"Content-Type": request.headers["Content-Type"]})
    assert_error(response, 400, "cut short")
    assert api.get(f"/steps/cut-{unique}").status_code == 404


def test_step_without_code_is_refused(api, unique) -> None:
    assert_error(post_step(api, step_form(f"nocode-{unique}"), None), 400, "has no code")


def test_duplicate_name_is_409(api, unique, hello_archive) -> None:
    assert post_step(api, step_form(f"dup-{unique}"), hello_archive).status_code == 201
    assert_error(post_step(api, step_form(f"dup-{unique}"), hello_archive), 409,
                 "already exists")


def test_code_over_5_mb_is_413(api, unique, tmp_path) -> None:
    folder = write_folder(tmp_path / "big", {"src/hello.py": HELLO,
                                             "data.bin": os.urandom(5 * 1024 * 1024 + 1)})
    response = post_step(api, step_form(f"big-{unique}"), archive_of(folder))
    body = assert_error(response, 413, "5 MB")
    assert body["name"] == "StepCodeTooLarge"


def test_archive_escaping_the_folder_is_refused(api, unique) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = HELLO.encode()
        member = tarfile.TarInfo("../../evil.py")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    response = post_step(api, step_form(f"evil-{unique}"), buffer.getvalue())
    assert_error(response, 400, "unsafe path")


def test_missing_function_file_fails_the_build_with_a_reason(api, unique, hello_archive
                                                              ) -> None:
    name = f"nofile-{unique}"
    response = post_step(api, step_form(name, function_path="src/missing.py"), hello_archive)
    body = assert_error(response, 400, "src/missing.py")
    assert body["name"] == "StepCreationFailed"
    mine = api.get(f"/steps/{name}").json()
    assert mine["creation_info"]["status"] == "creation_failed"
    assert "src/missing.py" in mine["creation_info"]["status_reason"]
    # craft-ai-sdk 0.50 only understands a 404 for a failed creation
    legacy = api.get(f"/steps/{name}", headers={"craft-ai-client": "craft-ai-sdk@0.50.1"})
    assert legacy.status_code == 404 and "failed" in legacy.json()["message"]
    # a new attempt with the same name replaces the failed one
    assert post_step(api, step_form(name), hello_archive).status_code == 201


def test_bad_requirement_names_the_package(api, unique, tmp_path) -> None:
    folder = write_folder(tmp_path / "req", {
        "src/hello.py": HELLO,
        "requirements.txt": "gristmill-no-such-package-zzz==9.9.9\n"})
    response = post_step(api, step_form(f"badreq-{unique}",
                                        container_config={"requirements_path":
                                                          "requirements.txt"}),
                         archive_of(folder))
    body = assert_error(response, 400, "gristmill-no-such-package-zzz")
    assert "build_log_tail" in body["additional_data"]
    logs = api.get(f"/steps/badreq-{unique}/logs").json()
    assert "gristmill-no-such-package-zzz" in logs["logs"]


def test_system_dependencies_are_recorded_with_a_warning(api, unique, hello_archive) -> None:
    step = post_step(api, step_form(f"sysdeps-{unique}",
                                    container_config={"system_dependencies": ["curl"]}),
                     hello_archive).json()
    assert step["parameters"]["container_config"]["system_dependencies"] == ["curl"]
    assert any("cannot install system packages" in w
               for w in step["creation_info"]["warnings"])


def test_explicit_null_requirements_overrides_the_default(api, unique, hello_archive) -> None:
    step = post_step(api, step_form(f"null-{unique}",
                                    container_config={"requirements_path": ""}),
                     hello_archive).json()
    assert step["parameters"]["container_config"]["requirements_path"] is None


def test_create_from_git_repository_records_the_commit(api, unique, tmp_path) -> None:
    repo = tmp_path / "repo"
    commit = git_repo(repo, {"src/hello.py": HELLO, "big/unused.bin": os.urandom(6_000_000)})
    response = post_step(api, step_form(f"git-{unique}", container_config={
        "repository_url": str(repo), "repository_branch": "main",
        "included_folders": ["src"]}), None)
    assert response.status_code == 201, response.text
    step = response.json()
    assert step["creation_info"]["origin"] == "git_repository"
    assert step["creation_info"]["commit_id"] == commit
    # without included_folders the unused 6 MB file would break the 5 MB limit
    response = post_step(api, step_form(f"git-all-{unique}", container_config={
        "repository_url": str(repo)}), None)
    assert_error(response, 400, "5 MB")


def test_a_git_step_cannot_include_files_from_outside_its_repository(api, unique, tmp_path
                                                                      ) -> None:
    """A link committed in the repository must not copy the service's own files (its
    data directory, say) into the step, where the step's code could read them."""
    secret = tmp_path / "service-data"
    secret.mkdir()
    (secret / "secret_key").write_text("the signing key")
    repo = tmp_path / "repo"
    write_folder(repo, {"src/hello.py": HELLO})
    (repo / "leak").symlink_to(secret)
    git_repo(repo, {})
    name = f"git-leak-{unique}"
    response = post_step(api, step_form(name, container_config={
        "repository_url": str(repo), "included_folders": ["src", "leak"]}), None)
    body = assert_error(response, 400, "'leak' leads outside the repository through a link")
    assert body["name"] == "StepCreationFailed"
    assert api.get(f"/steps/{name}").json()["creation_info"]["status"] == "creation_failed"
    assert "the signing key" not in response.text


def test_git_errors_are_clear(api, unique, tmp_path) -> None:
    repo = tmp_path / "repo"
    git_repo(repo, {"src/hello.py": HELLO})
    response = post_step(api, step_form(f"git-branch-{unique}", container_config={
        "repository_url": str(repo), "repository_branch": "no-such-branch"}), None)
    assert_error(response, 400, "git clone failed")
    response = post_step(api, step_form(f"git-url-{unique}", container_config={
        "repository_url": "https://user:s3cret@127.0.0.1:9/nothing.git"}), None)
    body = assert_error(response, 400, "git clone failed")
    assert "s3cret" not in body["message"] and "s3cret" not in str(body["additional_data"])
    # the step is kept (creation_failed); what shows its URL shows no credentials
    shown = [api.get(f"/steps/git-url-{unique}").json()["parameters"]["container_config"],
             next(s for s in api.get("/steps").json() if s["step_name"] == f"git-url-{unique}")]
    assert [s["repository_url"] for s in shown] == ["https://***@127.0.0.1:9/nothing.git"] * 2


def test_git_error_keeps_its_cause(api, unique) -> None:
    response = post_step(api, step_form(f"git-host-{unique}", container_config={
        "repository_url": "git@nonexistent.invalid:team/repo.git"}), None)
    body = assert_error(response, 400, "git clone failed")
    # the cause, not only git's closing advice ("... and the repository exists.")
    assert "Could not resolve hostname" in body["message"]


def test_function_absent_from_its_file_is_refused_at_creation(api, unique, hello_archive
                                                               ) -> None:
    name = f"nofunc-{unique}"
    response = post_step(api, step_form(name, function_name="predict"), hello_archive)
    body = assert_error(response, 400, "'predict' is not defined in 'src/hello.py'")
    assert body["name"] == "StepCreationFailed"
    assert api.get(f"/steps/{name}").json()["creation_info"]["status"] == "creation_failed"


def test_documented_old_language_runs_on_the_nearest_with_a_warning(api, unique,
                                                                     hello_archive) -> None:
    response = post_step(api, step_form(f"py39-{unique}",
                                        container_config={"language": "python:3.9-slim"}),
                         hello_archive)
    assert response.status_code == 201, response.text
    step = response.json()
    assert step["parameters"]["container_config"]["language"] == "python:3.10-slim"
    assert any("python:3.9-slim" in w and "nearest supported runtime" in w
               for w in step["creation_info"]["warnings"])
    again = api.get(f"/steps/py39-{unique}").json()
    assert again["creation_info"]["warnings"] == step["creation_info"]["warnings"]


def test_unsupported_language_names_the_real_default(api, unique, hello_archive,
                                                     gristmill_env) -> None:
    from gristmill_platform.steps.service import project_defaults

    response = post_step(api, step_form(f"py27-{unique}",
                                        container_config={"language": "python:2.7-slim"}),
                         hello_archive)
    body = assert_error(response, 400, "python:2.7-slim")
    assert body["name"] == "UnsupportedLanguage"
    default = project_defaults(gristmill_env.settings).language
    assert f"Without a language, steps use {default}." in body["message"]
    plain = post_step(api, step_form(f"nolang-{unique}"), hello_archive).json()
    assert plain["parameters"]["container_config"]["language"] == default


# -- pipelines --------------------------------------------------------------------------------

def test_pipeline_from_step_and_from_function(api, unique, hello_archive) -> None:
    step = f"ps-{unique}"
    post_step(api, step_form(step, **STRING_IO), hello_archive)
    created = api.post("/pipelines", json={"pipeline_name": f"p-{unique}",
                                           "step_names": [step]})
    assert created.status_code == 201, created.text
    pipeline = created.json()
    assert pipeline["inputs"] == [{"input_name": "name", "step_name": step,
                                   "data_type": "string", "description": None,
                                   "default_value": "world", "is_required": False}]
    assert api.get(f"/pipelines/p-{unique}/executions/latest").status_code == 204
    assert f"p-{unique}" in {p["pipeline_name"] for p in api.get("/pipelines").json()}

    hidden = post_step(api, step_form(f"pf-{unique}", name_field="pipeline_name", **STRING_IO),
                       hello_archive, route="/pipelines")
    assert hidden.status_code == 201, hidden.text
    assert hidden.json()["creation_info"]["status"] == "ready"
    assert f"pipeline:pf-{unique}" not in {s["step_name"] for s in api.get("/steps").json()}
    assert httpx.get(api.get(f"/pipelines/pf-{unique}/download").json()["signed_url"]
                     ).status_code == 200
    deleted = api.delete(f"/pipelines/pf-{unique}").json()
    assert deleted == {"pipeline": {"name": f"pf-{unique}"}, "deployments": []}
    assert api.get(f"/pipelines/pf-{unique}").status_code == 404


def test_pipeline_rejections(api, unique, hello_archive) -> None:
    assert_error(api.post("/pipelines", json={"pipeline_name": f"x-{unique}",
                                              "step_names": ["no-such-step"]}), 404, "not found")
    post_step(api, step_form(f"s2-{unique}"), hello_archive)
    assert_error(api.post("/pipelines", json={"pipeline_name": f"x-{unique}",
                                              "step_names": [f"s2-{unique}", "b"]}), 400,
                 "exactly one step")
    assert_error(api.post("/pipelines", json={"pipeline_name": "bad name",
                                              "step_names": [f"s2-{unique}"]}), 400,
                 "Invalid pipeline name")
    api.post("/pipelines", json={"pipeline_name": f"x-{unique}", "step_names": [f"s2-{unique}"]})
    assert_error(api.post("/pipelines", json={"pipeline_name": f"x-{unique}",
                                              "step_names": [f"s2-{unique}"]}), 409,
                 "already exists")


def test_deleting_a_used_step_needs_force(api, unique, hello_archive) -> None:
    step = f"used-{unique}"
    post_step(api, step_form(step), hello_archive)
    api.post("/pipelines", json={"pipeline_name": f"user-{unique}", "step_names": [step]})
    body = assert_error(api.delete(f"/steps/{step}"), 409, "force_dependents_deletion")
    assert body["additional_data"] == {"pipelines": [f"user-{unique}"]}
    forced = api.delete(f"/steps/{step}", params={"force_dependents_deletion": "True"}).json()
    assert forced["deleted_pipelines"] == [f"user-{unique}"]
    assert api.get(f"/pipelines/user-{unique}").status_code == 404


def test_one_environment_per_distinct_requirements(api, unique, tmp_path) -> None:
    requirements = f"# shared by two steps {unique}\n"
    folder = write_folder(tmp_path / "env", {"src/hello.py": HELLO,
                                             "requirements.txt": requirements})
    config = {"requirements_path": "requirements.txt"}
    for name in (f"env-a-{unique}", f"env-b-{unique}"):
        response = post_step(api, step_form(name, container_config=config), archive_of(folder))
        assert response.status_code == 201, response.text
    first = api.get(f"/steps/env-a-{unique}/logs").json()["logs"]
    second = api.get(f"/steps/env-b-{unique}/logs").json()["logs"]
    assert "Installing requirements.txt" in first
    assert "Reusing the Python environment" in second and "Installing" not in second
