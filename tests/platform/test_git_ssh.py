"""Steps from a Git repository over SSH with a deploy key, against a real sshd on loopback."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.platform.stepkit import HELLO, git_repo, post_step, step_form
from tests.platform.test_auth import assert_error

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.read_text()


@pytest.fixture(scope="module")
def ssh_server(tmp_path_factory):
    if SSHD is None:
        pytest.skip("sshd is not installed (Debian: apt-get install openssh-server; "
                    "scripts/setup.sh installs it when run as root)")
    if os.geteuid() != 0:
        pytest.skip("a loopback sshd that logs users in needs root")
    root = tmp_path_factory.mktemp("sshd")
    keygen(root / "host_key")
    deploy_key = keygen(root / "deploy_key")
    keygen(root / "other_key")
    (root / "authorized_keys").write_text((root / "deploy_key.pub").read_text())
    os.chmod(root / "authorized_keys", 0o600)
    port = free_port()
    config = root / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        f"PermitRootLogin prohibit-password\nPidFile {root / 'sshd.pid'}\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        probe = subprocess.run(["ssh-keyscan", "-p", str(port), "127.0.0.1"],
                               capture_output=True, text=True)
        if probe.stdout:
            break
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        time.sleep(0.1)
    repo = root / "models"
    commit = git_repo(repo, {"src/hello.py": HELLO})
    url = f"ssh://{getpass.getuser()}@127.0.0.1:{port}{repo}"
    try:
        yield {"url": url, "key": deploy_key, "other": (root / "other_key").read_text(),
               "commit": commit}
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_clone_over_ssh_with_a_deploy_key(api, unique, ssh_server) -> None:
    response = post_step(api, step_form(f"ssh-{unique}", container_config={
        "repository_url": ssh_server["url"], "repository_branch": "main",
        "repository_deploy_key": ssh_server["key"]}), None)
    assert response.status_code == 201, response.text
    step = response.json()
    assert step["creation_info"]["commit_id"] == ssh_server["commit"]
    assert "repository_deploy_key" not in step["parameters"]["container_config"]


def test_a_wrong_deploy_key_is_refused_clearly(api, unique, ssh_server) -> None:
    response = post_step(api, step_form(f"ssh-bad-{unique}", container_config={
        "repository_url": ssh_server["url"], "repository_deploy_key": ssh_server["other"]}),
        None)
    body = assert_error(response, 400, "git clone failed")
    assert "PRIVATE KEY" not in str(body)
