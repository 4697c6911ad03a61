"""A step whose language names another Python than the service's runs on that Python when
the machine has it (steps/environments.py, interpreter_for): its elastic executions
forked by a fork server of that Python, its low-latency calls answered by a warm worker
of that Python. The runner, the fork server and the warm worker (standard library only)
must work on every Python the runtime images ship, 3.10 to 3.13, not only on the
service's own, which every other test covers.

Each Python is looked for on PATH, then in pyenv's versions, then in /usr/bin; a Python
this machine lacks is skipped with a message."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gristmill_platform.steps import environments
from tests.platform.stepkit import archive_of, post_step, step_form, write_folder
from tests.platform.test_low_latency import call
from tests.platform.test_runs import outputs_of, run_and_wait

STEP = '''
import os
import sys


def where(text: str) -> dict:
    return {"info": {"text": text, "version": "%d.%d" % sys.version_info[:2],
                     "executable": sys.executable, "pid": os.getpid(),
                     "forked": "gristmill.runtime.zygote" in sys.modules,
                     "warm": "gristmill.runtime.serve" in sys.modules}}
'''
TEXT_IN = [{"name": "text", "data_type": "string"}]
INFO_OUT = [{"name": "info", "data_type": "json"}]
PYTHONS = ("3.10", "3.12", "3.13")


def _executable(candidate: str, version: str) -> str | None:
    """The interpreter behind ``candidate`` (a pyenv shim answers for one version only,
    and only with pyenv on PATH) when it is Python ``version``."""
    try:
        result = subprocess.run(
            [candidate, "-c",
             "import sys; print('%d.%d' % sys.version_info[:2]); print(sys.executable)"],
            capture_output=True, text=True, timeout=20, check=False)
    except OSError:
        return None
    lines = result.stdout.split()
    if result.returncode != 0 or len(lines) != 2 or lines[0] != version:
        return None
    return lines[1]


def find_python(version: str) -> str | None:
    """Python ``version``'s executable on this machine, if any."""
    candidates = [shutil.which(f"python{version}"),
                  *sorted(glob.glob(os.path.expanduser(
                      f"~/.pyenv/versions/{version}.*/bin/python{version}")), reverse=True),
                  f"/usr/bin/python{version}"]
    for candidate in candidates:
        if candidate and os.path.exists(candidate):
            found = _executable(candidate, version)
            if found:
                return found
    return None


@pytest.fixture(params=PYTHONS)
def python_version(request: pytest.FixtureRequest, tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """That Python as ``python3.X`` first on PATH (a pyenv shim there answers only for
    the selected version), for the in-process service that builds the step."""
    version: str = request.param
    if version == f"{sys.version_info.major}.{sys.version_info.minor}":
        pytest.skip(f"Python {version} is the service's own: every other test runs it")
    found = find_python(version)
    if found is None:
        pytest.skip(f"Python {version} is not installed on this machine (looked on PATH, "
                    "in ~/.pyenv/versions and /usr/bin)")
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / f"python{version}").symlink_to(found)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    environments._reports_version.cache_clear()
    yield version
    environments._reports_version.cache_clear()


def test_a_step_runs_on_the_python_its_language_names(
        api: httpx.Client, gristmill_env: Any, unique: str, tmp_path: Path,
        python_version: str) -> None:
    name = f"py{python_version.replace('.', '')}-{unique}"
    archive = archive_of(write_folder(tmp_path / "step", {"src/steps.py": STEP}))
    response = post_step(api, step_form(
        name, function_path="src/steps.py", function_name="where", inputs=TEXT_IN,
        outputs=INFO_OUT, name_field="pipeline_name",
        container_config={"language": f"python:{python_version}-slim"}),
        archive, route="/pipelines")
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["container_config"]["language"] == f"python:{python_version}-slim"
    assert created["creation_info"]["status"] == "ready"
    assert not any("is not installed" in w
                   for w in created["creation_info"].get("warnings", []))

    # elastic, twice: each a fresh process forked by that Python's fork server
    elastic = []
    for text in ("first", "second"):
        _, answer = run_and_wait(api, name, {"text": text})
        elastic.append(outputs_of(answer)["info"])
    for info, text in zip(elastic, ("first", "second"), strict=True):
        assert info["text"] == text and info["version"] == python_version
        assert info["forked"] and not info["warm"]
    assert elastic[0]["pid"] != elastic[1]["pid"]

    # low-latency: a warm worker of that Python answers both calls
    deployed = api.post("/endpoints", json={"pipeline_name": name, "name": name,
                                           "mode": "low_latency"})
    assert deployed.status_code == 201, deployed.text
    token = deployed.json()["endpoint_token"]
    warm = [call(gristmill_env, name, token, {"text": text})["info"]
            for text in ("one", "two")]
    assert [info["text"] for info in warm] == ["one", "two"]
    assert all(info["version"] == python_version and info["warm"] for info in warm)
    assert warm[0]["pid"] == warm[1]["pid"]
    assert api.delete(f"/deployments/{name}").status_code in (200, 204)
