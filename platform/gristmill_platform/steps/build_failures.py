"""Why a step image build failed, in words a data scientist can act on.

Kaniko ends a failed build with one fatal line ("error building image: ...", "error
pushing image: ..."); the lines before it are the output of the Dockerfile command that
failed (pip, apt). Earlier errors are not fatal: with ``--cache`` Kaniko reports every
cache miss as a MANIFEST_UNKNOWN it then ignores, so only the fatal line is classified.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from gristmill_platform.errors import AppError
from gristmill_platform.executors.spec import FailureCode, PollResult
from gristmill_platform.steps.environments import failed_requirement

TAIL_LINES = 6
MAX_LINE = 300

_FATAL = re.compile(
    r"(error building image|error pushing image|error resolving dockerfile path"
    r"|error resolving source context|error checking push permissions)",
    re.IGNORECASE,
)
_EXIT_STATUS = re.compile(r"exit status (\d+)")
_MISSING_IMAGE = re.compile(r"MANIFEST_UNKNOWN|NAME_UNKNOWN|manifest unknown|not found",
                            re.IGNORECASE)
_DENIED = re.compile(r"UNAUTHORIZED|DENIED|\b401\b|\b403\b|forbidden", re.IGNORECASE)
_CONTEXT = re.compile(r"operation error S3|NoSuchKey|NoSuchBucket|build context",
                      re.IGNORECASE)
_PARSE = re.compile(r"pars(e|ing) dockerfile|dockerfile parse error|unknown instruction",
                    re.IGNORECASE)
_APT_MISSING = re.compile(
    r"E: Unable to locate package (\S+)|E: Package '([^']+)' has no installation candidate")
# Kaniko's own lines ("INFO[0004] RUN pip install ..."): the commands' output says more
_KANIKO_LINE = re.compile(r"(INFO|DEBU|WARN|ERRO|TRAC)\[\d+\]")


def _clip(line: str) -> str:
    line = line.strip()
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…"


def last_lines(lines: Sequence[str], count: int = TAIL_LINES) -> list[str]:
    return [_clip(line) for line in [*lines][::-1] if line.strip()][:count][::-1]


def _tail_sentence(lines: Sequence[str]) -> str:
    tail = last_lines([line for line in lines if not _KANIKO_LINE.match(line.strip())])
    tail = tail or last_lines(lines)
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
    if outcome.code == FailureCode.DEADLINE_EXCEEDED:
        return f"{outcome.reason}{_tail_sentence(log)}"
    if outcome.code == FailureCode.OOM_KILLED:
        return ("The image build ran out of memory: installing large requirements (several "
                "big wheels at once) can need more than the builder has; install fewer at "
                f"once, or bring your own Dockerfile.{_tail_sentence(log)}")
    if outcome.code == FailureCode.WORKER_LOST:
        return ("The image build was interrupted: its Job or its pod was deleted (or its "
                f"node went away) before it finished. Create the step again.{_tail_sentence(log)}")
    if outcome.code in (FailureCode.IMAGE_PULL, FailureCode.CONFIG,
                        FailureCode.UNSCHEDULABLE):
        return f"The image builder could not start: {outcome.reason}"
    fatal_at = next((i for i in range(len(log) - 1, -1, -1) if _FATAL.search(log[i])), None)
    if fatal_at is None:
        reason = outcome.reason or "The image build failed."
        return f"{reason}{_tail_sentence(log)}"
    fatal = log[fatal_at]
    before = log[:fatal_at]
    if re.search(r"error pushing image|error checking push permissions", fatal, re.I):
        return (f"The image was built but could not be pushed to {registry}: check the "
                "builder's registry credentials (the builder service account's role, or "
                f"kubernetes_registry_auth_secret). {_clip(fatal)}")
    if re.search(r"error resolving dockerfile path", fatal, re.I):
        return ("The Dockerfile given by dockerfile_path is not in the step's code: check "
                "the path (relative to the step's folder) and included_folders.")
    if _PARSE.search(fatal):
        return f"The Dockerfile could not be read: {_clip(fatal)}"
    if _CONTEXT.search(fatal):
        return ("The builder could not read the step's code from the data store: check "
                "that the builder service account may read the bucket. " + _clip(fatal))
    status = _EXIT_STATUS.search(fatal)
    if status is not None and "failed to execute command" in fatal:
        return _command_failure(before, int(status.group(1)), base, own_dockerfile)
    if _DENIED.search(fatal):
        return (f"The builder may not pull a base image ({_clip(fatal)}): check the "
                "builder's registry credentials.")
    if _MISSING_IMAGE.search(fatal):
        if own_dockerfile:
            return f"A base image of the step's Dockerfile does not exist: {_clip(fatal)}"
        return (f"The runtime image {base} is not in the registry: push the runtime "
                f"images for this platform version (runtime-images/build.sh --registry "
                f"{registry}), or choose another language. {_clip(fatal)}")
    return f"The image build failed: {_clip(fatal)}{_tail_sentence(before)}"


def _command_failure(before: Sequence[str], status: int, base: str,
                     own_dockerfile: bool) -> str:
    text = "\n".join(before)
    package = failed_requirement(text)
    if package:
        return (f"pip could not install {package!r}: check the name and version in your "
                f"requirements file.{_tail_sentence(before)}")
    apt = next((m.group(1) or m.group(2) for line in before
                if (m := _APT_MISSING.search(line))), None)
    if apt:
        return (f"The system package {apt!r} does not exist in the distribution of {base}: "
                "check system_dependencies (Debian 12 package names for python:*, Ubuntu "
                f"22.04 for python-cuda:*).{_tail_sentence(before)}")
    what = "A command of the step's Dockerfile" if own_dockerfile else "A build command"
    return f"{what} failed (exit status {status}).{_tail_sentence(before)}"


class BuildFailed(AppError):
    status_code = 400
    name = "StepCreationFailed"


def creation_failed(kind: str, name: str, reason: str | None, build_log: str) -> BuildFailed:
    tail = build_log.splitlines()[-30:]
    return BuildFailed(f"Creation of {kind} {name!r} failed: {reason}",
                       additional_data={"build_log_tail": tail})
