"""Why a step image build failed, in words a data scientist can act on.

The build Job runs rootless BuildKit (``buildctl build --progress=plain``). Its log is a
series of numbered steps ("vertices"): ``#6 [2/3] RUN pip install ...`` opens one, the
output of its command follows as ``#6 1.204 <line>`` (seconds since it started), and a
failed one ends with ``#6 ERROR: <why>``. BuildKit then repeats the failed step's last
lines between ``------`` rules (and, in some versions, the Dockerfile around it), and
buildctl ends with one fatal line: ``error: failed to solve: <why>``. A chain of causes
joined by colons, the useful one last, as in "failed to solve: <image>: failed to resolve
source metadata for <image>: <image>: not found".

So the fatal line says *what* failed, the failed vertex's name says *where* (a ``RUN``,
reading the base image's metadata, exporting to the registry), and the failed vertex's
own output says *why*, in the words of pip or apt. Each is read here; the repeated block
and BuildKit's progress lines (layers pulled, cache imported) are left out of what is
shown.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from gristmill_platform.errors import AppError
from gristmill_platform.executors.spec import FailureCode, PollResult
from gristmill_platform.steps.environments import failed_requirement

TAIL_LINES = 6
MAX_LINE = 300

# buildctl's last word ("error: failed to solve: ..."); docker buildx writes "ERROR:" and,
# since 0.21, "failed to build: failed to solve:".
_FATAL = re.compile(r"^(?:error|ERROR):\s+(?P<why>.+)$")
_VERTEX_START = re.compile(r"^#(?P<id>\d+) (?P<name>\[.*|[a-z].*)$")
_VERTEX_OUTPUT = re.compile(r"^#(?P<id>\d+) \d+\.\d+ ?(?P<text>.*)$")
_VERTEX_ERROR = re.compile(r"^#(?P<id>\d+) ERROR: (?P<why>.*)$")
_EXIT_CODE = re.compile(r"did not complete successfully: exit code: (\d+)")
_PUSH = re.compile(r"failed to push|failed commit on ref|push access denied"
                   r"|failed to export|exporting (?:to image|cache)", re.IGNORECASE)
_BASE_METADATA = re.compile(r"failed to resolve source metadata|load metadata for",
                            re.IGNORECASE)
_NOT_FOUND = re.compile(r"not found|MANIFEST_UNKNOWN|NAME_UNKNOWN|manifest unknown",
                        re.IGNORECASE)
_DENIED = re.compile(r"UNAUTHORIZED|DENIED|\b401\b|\b403\b|forbidden|failed to authorize",
                     re.IGNORECASE)
_NO_DOCKERFILE = re.compile(r"failed to read dockerfile", re.IGNORECASE)
_PARSE = re.compile(r"dockerfile parse error|unknown instruction|failed to parse",
                    re.IGNORECASE)
_APT_MISSING = re.compile(
    r"E: Unable to locate package (\S+)|E: Package '([^']+)' has no installation candidate")


@dataclass(frozen=True)
class BuildLogReading:
    """What a BuildKit log says: the fatal message, the failed vertex and its output."""

    fatal: str | None  # the text after "error: ", None when buildctl never said
    vertex: str | None  # the failed vertex's name, e.g. "[2/3] RUN pip install ..."
    vertex_error: str | None  # its "#N ERROR:" message
    output: list[str]  # the failed vertex's command output, else every vertex's


def read_build_log(lines: Sequence[str]) -> BuildLogReading:
    names: dict[str, str] = {}
    outputs: dict[str, list[str]] = {}
    every_output: list[str] = []
    failed: tuple[str, str] | None = None
    fatal: str | None = None
    for raw in lines:
        line = raw.rstrip()
        if match := _VERTEX_ERROR.match(line):
            failed = (match["id"], match["why"])
        elif match := _VERTEX_OUTPUT.match(line):
            outputs.setdefault(match["id"], []).append(match["text"])
            every_output.append(match["text"])
        elif match := _VERTEX_START.match(line):
            names.setdefault(match["id"], match["name"])
        elif match := _FATAL.match(line.strip()):
            fatal = match["why"]
    if failed is None:
        return BuildLogReading(fatal, None, None, every_output)
    vertex_id, why = failed
    return BuildLogReading(fatal, names.get(vertex_id), why,
                           outputs.get(vertex_id) or every_output)


def _clip(line: str) -> str:
    line = line.strip()
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…"


def last_lines(lines: Sequence[str], count: int = TAIL_LINES) -> list[str]:
    return [_clip(line) for line in [*lines][::-1] if line.strip()][:count][::-1]


def _shown(lines: Sequence[str]) -> list[str]:
    """The log without BuildKit's rules and the block that repeats the failed step
    (``------``, `` > [2/3] RUN ...:``, its last lines, ``------``)."""
    shown: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if line.strip() == "------" and following.startswith(" > "):
            closing = next((at for at in range(index + 2, len(lines))
                            if lines[at].strip() == "------"), len(lines))
            index = closing + 1
            continue
        if not line.strip() or set(line.strip()) != {"-"}:
            shown.append(line)
        index += 1
    return shown


def _tail_sentence(lines: Sequence[str]) -> str:
    tail = last_lines(lines)
    return f" Last lines of the build log: {' | '.join(tail)}" if tail else ""


def build_failure_reason(
    outcome: PollResult,
    log: Sequence[str],
    *,
    base: str,
    registry: str,
    own_dockerfile: bool,
) -> str:
    """The step's status_reason for a failed build, from the Job's outcome and its log."""
    reading = read_build_log(log)
    tail = _tail_sentence(reading.output or _shown(log))
    if outcome.code == FailureCode.DEADLINE_EXCEEDED:
        return f"{outcome.reason}{tail}"
    if outcome.code == FailureCode.OOM_KILLED:
        return ("The image build ran out of memory: installing large requirements (several "
                "big wheels at once) can need more than the builder has; install fewer at "
                f"once, or bring your own Dockerfile.{tail}")
    if outcome.code == FailureCode.WORKER_LOST:
        return ("The image build was interrupted: its Job or its pod was deleted (or its "
                f"node went away) before it finished. Create the step again.{tail}")
    if outcome.code in (FailureCode.IMAGE_PULL, FailureCode.CONFIG,
                        FailureCode.UNSCHEDULABLE):
        return f"The image builder could not start: {outcome.reason}{tail}"
    if reading.fatal is None and reading.vertex_error is None:
        return f"{outcome.reason or 'The image build failed.'}{tail}"
    fatal = reading.fatal or reading.vertex_error or ""
    where = reading.vertex or ""
    status = _EXIT_CODE.search(fatal) or _EXIT_CODE.search(reading.vertex_error or "")
    if status is not None:
        return _command_failure(reading.output, int(status.group(1)), base, own_dockerfile)
    if _PUSH.search(fatal) or _PUSH.search(where):
        return (f"The image was built but could not be pushed to {registry}: check the "
                "builder's registry credentials (the builder service account's role, or "
                f"kubernetes_registry_auth_secret). {_clip(fatal)}")
    if _NO_DOCKERFILE.search(fatal):
        return ("The Dockerfile given by dockerfile_path is not in the step's code: check "
                "the path (relative to the step's folder) and included_folders. "
                + _clip(fatal))
    if _PARSE.search(fatal):
        return f"The Dockerfile could not be read: {_clip(fatal)}"
    if _BASE_METADATA.search(fatal) or _BASE_METADATA.search(where):
        if _DENIED.search(fatal):
            return (f"The builder may not pull a base image ({_clip(fatal)}): check the "
                    "builder's registry credentials.")
        if _NOT_FOUND.search(fatal):
            if own_dockerfile:
                return f"A base image of the step's Dockerfile does not exist: {_clip(fatal)}"
            return (f"The runtime image {base} is not in the registry: push the runtime "
                    f"images for this platform version (runtime-images/build.sh --registry "
                    f"{registry}), or choose another language. {_clip(fatal)}")
    return f"The image build failed: {_clip(fatal)}{tail}"


def _command_failure(output: Sequence[str], status: int, base: str,
                     own_dockerfile: bool) -> str:
    tail = _tail_sentence(output)
    package = failed_requirement("\n".join(output))
    if package:
        return (f"pip could not install {package!r}: check the name and version in your "
                f"requirements file.{tail}")
    apt = next((m.group(1) or m.group(2) for line in output
                if (m := _APT_MISSING.search(line))), None)
    if apt:
        return (f"The system package {apt!r} does not exist in the distribution of {base}: "
                "check system_dependencies (Debian 12 package names for python:*, Ubuntu "
                f"22.04 for python-cuda:*).{tail}")
    what = "A command of the step's Dockerfile" if own_dockerfile else "A build command"
    return f"{what} failed (exit code {status}).{tail}"


class BuildFailed(AppError):
    status_code = 400
    name = "StepCreationFailed"


def creation_failed(kind: str, name: str, reason: str | None, build_log: str) -> BuildFailed:
    tail = build_log.splitlines()[-30:]
    return BuildFailed(f"Creation of {kind} {name!r} failed: {reason}",
                       additional_data={"build_log_tail": tail})
