"""Which lines of a worker pod's log the platform does not have yet (pure).

The runner ships everything the step prints to the control service itself (POST /logs,
then the last batch with /finish) and also echoes it to its real output, which is the pod
log. So the pod log repeats what the execution's logs already hold, plus what the runner
could not send:

* what it printed outside its capture: its own "[gristmill] ..." messages before the step
  started (control service unreachable, bad configuration) or after the result was in;
* the last lines before the process was killed (out of memory, eviction, deadline): the
  runner ships in batches, and a killed process sends nothing more.

Before a pod is deleted, its log is compared with the lines stored for the execution and
only the missing ones are stored. The comparison counts messages (a multiset), in pod-log
order: a line the runner sent matches one stored line of the same text, so a line printed
twice and shipped once is stored once more, and one line that differs costs one duplicate
instead of shifting every line after it. Credentials are masked first, as the runner does.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterable, Sequence

from gristmill_platform.executors.base import LogLine

# What the runner masks in the lines it ships (its SDK token and access token) is still
# raw in the pod log: masked here the same way ("***") before any comparison, so that no
# pod line brings a credential into the stored logs.
_CREDENTIALS = re.compile(
    r"gm_[0-9a-f]+_[A-Za-z0-9_\-]+"  # SDK tokens (auth/tokens.py)
    r"|eyJ[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+")  # JWT access tokens

# The runner splits longer lines; the pod log keeps them whole. Comparing the first
# MAX_LINE_CHARS characters matches such a line with the first part the runner sent.
MAX_LINE_CHARS = 16 * 1024


def redact_credentials(message: str) -> str:
    return _CREDENTIALS.sub("***", message)


def _key(message: str) -> str:
    return message[:MAX_LINE_CHARS]


def unshipped(pod_lines: Sequence[LogLine], stored: Iterable[str]) -> list[LogLine]:
    """The pod's lines that are not among the ``stored`` messages, in pod-log order."""
    remaining = Counter(_key(message) for message in stored)
    missing: list[LogLine] = []
    for line in pod_lines:
        message = redact_credentials(line.message)
        key = _key(message)
        if remaining[key] > 0:
            remaining[key] -= 1
        else:
            missing.append(dataclasses.replace(line, message=message))
    return missing
