"""Cloning a step's Git repository (HTTPS, local paths, or SSH with a deploy key)."""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gristmill_platform.errors import BadRequest
from gristmill_platform.timeouts import within

CLONE_TIMEOUT_S = 180
_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)


class GitError(BadRequest):
    name = "GitCloneFailed"


def redact(text: str) -> str:
    """Remove credentials from URLs (https://user:token@host) before showing text."""
    return _USERINFO.sub(r"\g<scheme>***@", text)


@dataclass(frozen=True)
class Checkout:
    path: Path
    commit_id: str


async def _git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
               timeout: float = CLONE_TIMEOUT_S) -> str:
    process = await asyncio.create_subprocess_exec(
        "git", *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await within(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise GitError(f"git {args[0]} took longer than {int(timeout)} s") from None
    if process.returncode != 0:
        raise GitError(failure_message(args[0], err.decode(errors="replace"),
                                       process.returncode))
    return out.decode().strip()


MAX_ERROR_CHARS = 2000


def failure_message(command: str, stderr: str, returncode: int | None) -> str:
    """git's whole error, credentials removed: its last line is often only advice ("...and
    the repository exists.") while the cause ("Could not resolve hostname") comes first.
    Wrapped lines are joined; a very long output keeps its end."""
    paragraphs = [" ".join(line.strip() for line in block.splitlines() if line.strip())
                  for block in stderr.strip().split("\n\n")]
    text = " ".join(p for p in paragraphs if p) or f"exit code {returncode}"
    if len(text) > MAX_ERROR_CHARS:
        text = "…" + text[-MAX_ERROR_CHARS:]
    return f"git {command} failed: {redact(text)}"


async def clone(url: str, branch: str | None, deploy_key: str | None, destination: Path
                ) -> Checkout:
    env = {
        **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")},
        "GIT_TERMINAL_PROMPT": "0",  # never hang waiting for a password
    }
    with tempfile.TemporaryDirectory(prefix="gristmill-git-") as scratch:
        if deploy_key:
            key_file = Path(scratch) / "deploy_key"
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(deploy_key.strip() + "\n")
            known_hosts = Path(scratch) / "known_hosts"
            env["GIT_SSH_COMMAND"] = (
                f"ssh -i {key_file} -o IdentitiesOnly=yes -o BatchMode=yes "
                f"-o StrictHostKeyChecking=accept-new -o UserKnownHostsFile={known_hosts}"
            )
        args = ["clone", "--depth", "1", "--quiet"]
        if branch:
            args += ["--branch", branch]
        await _git(*args, "--", url, str(destination), env=env)
    commit = await _git("rev-parse", "HEAD", cwd=destination)
    return Checkout(path=destination, commit_id=commit)
