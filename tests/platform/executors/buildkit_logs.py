"""Build logs as the build Job's ``buildctl build --progress=plain`` writes them.

No build runs here (the emulator plays the Job), so the tests feed these logs to the
control service. They follow BuildKit's plain progress output: ``#N <name>`` opens a
step, ``#N <seconds> <line>`` is its command's output, ``#N ERROR: <why>`` ends a failed
one, the failed step's last lines are repeated between ``------`` rules with the
Dockerfile around it, and buildctl's last line is ``error: failed to solve: <why>``.
"""

from __future__ import annotations

BASE = "registry.example/acme/gristmill-runtime/python:3.12-slim"
REGISTRY = "registry.example/acme"
STEPS = f"{REGISTRY}/gristmill-steps"
CACHE = f"{REGISTRY}/gristmill-cache:python-3.12-slim"

PIP = "pip install --requirement /tmp/requirements.txt"
APT = ("apt-get update     && apt-get install --yes --no-install-recommends libfoo9     "
       "&& rm -rf /var/lib/apt/lists/*")

_START = [
    "#1 [internal] load build definition from Dockerfile",
    "#1 transferring dockerfile: 412B done",
    "#1 DONE 0.0s",
    "",
    f"#2 [internal] load metadata for {BASE}",
    "#2 DONE 0.4s",
    "",
    "#3 [internal] load .dockerignore",
    "#3 transferring context: 2B done",
    "#3 DONE 0.0s",
    "",
    f"#4 importing cache manifest from {CACHE}",
    "#4 inferred cache manifest type: application/vnd.oci.image.manifest.v1+json done",
    "#4 DONE 0.2s",
    "",
    f"#5 [1/3] FROM {BASE}@sha256:3f1c0e5b9a",
    f"#5 resolve {BASE}@sha256:3f1c0e5b9a 0.0s done",
    "#5 sha256:5c8e4b2a 29.13MB / 29.13MB 1.2s done",
    "#5 extracting sha256:5c8e4b2a 0.9s done",
    "#5 DONE 2.3s",
    "",
    "#6 [internal] load build context",
    "#6 transferring context: 1.31kB done",
    "#6 DONE 0.0s",
    "",
    '#7 [2/3] COPY --chown=10001:10001 ["requirements.txt", "/tmp/requirements.txt"]',
    "#7 DONE 0.1s",
    "",
]


def _failed_run(vertex: int, step: str, command: str, output: list[str], code: int,
                line: int) -> list[str]:
    timed = [f"#{vertex} {1.2 + index / 100:.3f} {text}" for index, text in enumerate(output)]
    why = f'process "/bin/sh -c {command}" did not complete successfully: exit code: {code}'
    return [
        f"#{vertex} [{step}] RUN {command}",
        *timed,
        f"#{vertex} ERROR: {why}",
        "------",
        f" > [{step}] RUN {command}:",
        *[f"{1.2 + index / 100:.3f} {text}" for index, text in enumerate(output)][-4:],
        "------",
        f"Dockerfile:{line}",
        "--------------------",
        f"  {line - 1} |     COPY --chown=10001:10001 requirements.txt /tmp/requirements.txt",
        f"  {line} | >>> RUN {command}",
        f"  {line + 1} |     COPY --chown=10001:10001 . /app",
        "--------------------",
        f"error: failed to solve: {why}",
    ]


BUILD_OK = "\n".join([
    *_START,
    f"#8 [3/3] RUN {PIP}",
    "#8 1.911 Collecting httpx==0.28.1",
    "#8 3.402 Successfully installed httpx-0.28.1",
    "#8 DONE 4.1s",
    "",
    "#9 exporting to image",
    "#9 exporting layers 0.3s done",
    f"#9 pushing layers to {STEPS} 1.1s done",
    "#9 DONE 1.6s",
])

PIP_OUTPUT = [
    "ERROR: Could not find a version that satisfies the requirement nosuchpkg==9.9 "
    "(from versions: none)",
    "ERROR: No matching distribution found for nosuchpkg==9.9",
]
PIP_FAILS = [*_START, *_failed_run(8, "3/3", PIP, PIP_OUTPUT, 1, 6)]

APT_FAILS = [*_START, *_failed_run(8, "2/4", APT, [
    "Get:1 http://deb.debian.org/debian bookworm InRelease [151 kB]",
    "Reading package lists...",
    "E: Unable to locate package libfoo9",
], 100, 5)]

MAKE_FAILS = [*_START, *_failed_run(8, "3/3", "make all", [
    "cc -O2 -c native.c",
    "native.c:3:10: fatal error: missing.h: No such file or directory",
    "make: *** [all] Error 2",
], 2, 6)]

NO_BASE = [
    "#1 [internal] load build definition from Dockerfile",
    "#1 transferring dockerfile: 412B done",
    "#1 DONE 0.0s",
    "",
    f"#2 [internal] load metadata for {BASE}",
    f"#2 ERROR: {BASE}: not found",
    "------",
    f" > [internal] load metadata for {BASE}:",
    "------",
    f"error: failed to solve: {BASE}: failed to resolve source metadata for {BASE}: "
    f"{BASE}: not found",
]

BASE_DENIED = [
    f"#2 [internal] load metadata for {BASE}",
    "#2 ERROR: failed to authorize: failed to fetch oauth token: 401 Unauthorized",
    f"error: failed to solve: {BASE}: failed to resolve source metadata for {BASE}: "
    "failed to authorize: failed to fetch oauth token: unexpected status from GET request "
    "to https://registry.example/token: 401 Unauthorized",
]

PUSH_DENIED = [
    *_START,
    f"#8 [3/3] RUN {PIP}",
    "#8 3.402 Successfully installed httpx-0.28.1",
    "#8 DONE 4.1s",
    "",
    "#9 exporting to image",
    "#9 exporting layers 0.3s done",
    f"#9 pushing layers to {STEPS}",
    "#9 ERROR: unexpected status from HEAD request: 403 Forbidden",
    "------",
    " > exporting to image:",
    "------",
    f"error: failed to solve: failed to push {STEPS}:0123abcd: unexpected status from HEAD "
    "request: 403 Forbidden",
]

NO_DOCKERFILE = [
    "#1 [internal] load build definition from docker/Dockerfile.gpu",
    "#1 transferring dockerfile: 2B done",
    "#1 DONE 0.0s",
    "error: failed to solve: failed to read dockerfile: open docker/Dockerfile.gpu: no such "
    "file or directory",
]

PARSE_ERROR = [
    "#1 [internal] load build definition from Dockerfile",
    "#1 transferring dockerfile: 98B done",
    "#1 DONE 0.0s",
    "Dockerfile:3",
    "--------------------",
    "   3 | >>> RUNN pip install numpy",
    "--------------------",
    "error: failed to solve: dockerfile parse error on line 3: unknown instruction: RUNN",
]
