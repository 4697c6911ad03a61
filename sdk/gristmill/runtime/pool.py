"""``python -m gristmill.runtime pool``: a pre-started pod of an elastic pool.

The pod starts before any execution is known. Its runner waits for one
(``POST /api/v1/runtime/pool/claim``, a long-poll, with the pod's pool token), receives
the execution's id, environment and execution token, then runs it exactly as
``python -m gristmill.runtime run`` would, in this same fresh process, and exits: a pool
pod runs one execution. Nothing of the execution is in the pod's own environment.

Configuration, from the pod's environment (set by the control service's pool):
  GRISTMILL_ENVIRONMENT_URL     the control service (or CRAFT_AI_ENVIRONMENT_URL)
  GRISTMILL_POOL_TOKEN          the pod's pool token
  GRISTMILL_POOL_STEP_ID        the step whose executions it may run
  GRISTMILL_POD_NAME            the pod's name (the downward API)
  GRISTMILL_POOL_CLAIM_WAIT_S   how long one claim waits on the server (default 20)
  GRISTMILL_POOL_IDLE_LIMIT_S   exit (0) after this long without an execution

Exit codes: those of ``run`` once it has an execution; before: 0 idle limit reached or
retired, 3 refused by the control service or unreachable.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, MutableMapping
from typing import Any

# Imported while idle, so that the execution does not wait for it.
from gristmill.runtime import runner
from gristmill.runtime._control import ENVIRONMENT_URL_VARS, USER_AGENT

TOKEN_VAR = "GRISTMILL_POOL_TOKEN"  # noqa: S105 - a variable's name
STEP_VAR = "GRISTMILL_POOL_STEP_ID"
WAIT_VAR = "GRISTMILL_POOL_CLAIM_WAIT_S"
IDLE_LIMIT_VAR = "GRISTMILL_POOL_IDLE_LIMIT_S"
POD_VAR = "GRISTMILL_POD_NAME"
TOKEN_HEADER = "X-Gristmill-Pool-Token"  # noqa: S105 - a header's name
POOL_VARS = (TOKEN_VAR, STEP_VAR, WAIT_VAR, IDLE_LIMIT_VAR)
UNREACHABLE_BUDGET_S = 60.0
EXIT_IDLE = 0

# (url, body, headers, timeout) -> (status, body)
Post = Callable[[str, bytes, dict[str, str], float], tuple[int, bytes]]


class Refused(Exception):
    pass


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST",  # noqa: S310
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return int(error.code), error.read()


def wait_for_execution(env: MutableMapping[str, str], post: Post = _post,
                       clock: Callable[[], float] = time.monotonic,
                       sleep: Callable[[float], None] = time.sleep) -> dict[str, Any] | None:
    """The assignment (``{"execution_id", "env"}``), or None once the idle limit passed.
    Raises ``Refused`` when the control service refuses the pod or cannot be reached."""
    base = next((env[name] for name in ENVIRONMENT_URL_VARS if env.get(name)), "")
    token, step_id, pod = env.get(TOKEN_VAR, ""), env.get(STEP_VAR, ""), env.get(POD_VAR, "")
    if not (base and token and step_id and pod):
        raise Refused(f"a pool pod needs {ENVIRONMENT_URL_VARS[0]}, {TOKEN_VAR}, {STEP_VAR} "
                      f"and {POD_VAR}")
    wait_s = float(env.get(WAIT_VAR) or 20)
    idle_limit = float(env.get(IDLE_LIMIT_VAR) or 0) or None
    url = f"{base.rstrip('/')}/api/v1/runtime/pool/claim"
    body = json.dumps({"pod": pod, "step_id": step_id, "wait_s": wait_s}).encode()
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               TOKEN_HEADER: token}
    started = clock()
    failing_since: float | None = None
    delay = 0.2
    while True:
        if idle_limit is not None and clock() - started > idle_limit:
            return None
        try:
            status, content = post(url, body, headers, wait_s + 30)
        except OSError as error:
            status, content = 0, str(error).encode()
        if status == 200:
            answer = json.loads(content)
            if not isinstance(answer, dict) or not isinstance(answer.get("env"), dict):
                raise Refused("the claim answered no assignment")
            return answer
        if status == 204:
            failing_since, delay = None, 0.2
            continue
        if status in (0, 429, 502, 503, 504):
            failing_since = failing_since if failing_since is not None else clock()
            if clock() - failing_since > UNREACHABLE_BUDGET_S:
                raise Refused(f"the control service is unreachable: {content[:200]!r}")
            sleep(delay)
            delay = min(delay * 2, 5.0)
            continue
        raise Refused(f"the control service refused this pool pod ({status}): "
                      f"{_message(content)}")


def _message(content: bytes) -> str:
    try:
        body = json.loads(content)
    except ValueError:
        return content[:200].decode(errors="replace")
    if isinstance(body, dict):
        return str(body.get("message") or body.get("detail") or body)
    return str(body)


def pool(environ: MutableMapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    try:
        assignment = wait_for_execution(env)
    except Refused as refused:
        print(f"{runner.PREFIX} {refused}", file=sys.stderr, flush=True)
        return runner.EXIT_UNREACHABLE
    if assignment is None:
        return EXIT_IDLE
    # The pool token is of no use to the step: it leaves the environment before the step
    # is imported. What the pod has of its own (step folder, I/O volume) is kept.
    for name in POOL_VARS:
        env.pop(name, None)
    env.update({str(k): str(v) for k, v in assignment["env"].items()})
    return runner.run(env)
