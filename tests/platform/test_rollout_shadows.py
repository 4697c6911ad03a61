"""Shadow copies of low-latency calls (docs/rollout.md): the workers that only run copies
have a low CPU priority, the copies sent at once are bounded, and a copy dropped past the
queue's bound is counted. On the real control service and real warm workers, SQLite and
PostgreSQL. No wall-clock claim: the order of recorded timestamps and process priorities
are what is checked."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from gristmill_platform.executions import low_latency
from gristmill_platform.executors.local_workers import BACKGROUND_NICE
from gristmill_platform.executors.workers import variant_key
from gristmill_platform.telemetry.metrics import SHADOW_COPIES_DROPPED
from tests.platform.test_low_latency import eventually
from tests.platform.test_rollout import (
    INFO_OUT,
    TEXT_IN,
    archive,
    ask,
    endpoint,
    executions,
    set_traffic,
)
from tests.platform.test_runs import make_pipeline

__all__ = ["archive"]  # the module's fixture: the step folder of test_rollout


def workers_of(key: str) -> list[psutil.Process]:
    """The running warm-worker processes of a pool key (their I/O folder names it)."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if process.status() != psutil.STATUS_ZOMBIE and f"/local-{key}-" in \
                    process.environ().get("GRISTMILL_IO_DIR", ""):
                found.append(process)
        except psutil.Error:
            continue  # exited meanwhile
    return found


def shadows(api: Any, name: str) -> list[dict[str, Any]]:
    return [e for e in executions(api, name) if e["shadow"]]


def shadowed(api: Any, env: Any, archive: bytes, name: str, unique: str
             ) -> tuple[str, str, str]:
    """A low-latency endpoint `name` answered by a champion and shadowed by a challenger,
    called once and its copy run (the shadow workers are up). Returns its token, champion
    and challenger."""
    champion = make_pipeline(api, archive, f"champ-{unique}", "champion", TEXT_IN, INFO_OUT)
    challenger = make_pipeline(api, archive, f"chall-{unique}", "challenger", TEXT_IN,
                               INFO_OUT)
    token = endpoint(api, champion, name, "low_latency")
    assert set_traffic(api, name, shadow=[challenger]).status_code == 200
    assert ask(env, name, token, "first")[:2] == (champion, "champion")
    eventually(lambda: [e for e in shadows(api, name) if e["status"] == "Succeeded"],
               "the first copy")
    return token, champion, challenger


def test_shadow_only_workers_run_at_a_low_priority_until_the_pipeline_answers(
        gristmill_env, api, archive, unique) -> None:
    name = f"nice-{unique}"
    token, champion, challenger = shadowed(api, gristmill_env, archive, name, unique)

    ours = os.getpriority(os.PRIO_PROCESS, 0)
    [own] = workers_of(name)
    [shadow_worker] = workers_of(variant_key(name, challenger))
    assert own.nice() == ours
    assert shadow_worker.nice() == max(ours, BACKGROUND_NICE)

    # the pipeline now answers calls: its workers roll to the normal priority first
    assert set_traffic(api, name, split={challenger: 1}).status_code == 200
    assert ask(gristmill_env, name, token, "b")[:2] == (challenger, "challenger")
    serving = eventually(lambda: [p for p in workers_of(variant_key(name, challenger))
                                  if p.pid != shadow_worker.pid] or None,
                         "the rolled worker")
    assert [p.nice() for p in serving] == [ours]
    eventually(lambda: not shadow_worker.is_running()
               or shadow_worker.status() == psutil.STATUS_ZOMBIE, "the old worker to stop")


def test_a_shadow_pipeline_gets_a_copy_per_free_place_and_none_is_lost(
        gristmill_env, api, archive, unique) -> None:
    # one place (no parallel executions): the copies wait in the queue, not in its line
    name = f"bound-{unique}"
    champion = make_pipeline(api, archive, f"champ-{unique}", "champion", TEXT_IN, INFO_OUT)
    gated = make_pipeline(api, archive, f"gated-{unique}", "gated", TEXT_IN, INFO_OUT)
    token = endpoint(api, champion, name, "low_latency")
    assert set_traffic(api, name, shadow=[gated]).status_code == 200
    gate = Path(gristmill_env.data_dir) / f"gate-{unique}"
    for _ in range(3):  # answered while the copies' gate is closed
        assert ask(gristmill_env, name, token, str(gate))[:2] == (champion, "champion")
    gate.write_text("open")

    copies = eventually(lambda: (lambda found: found if len(found) == 3 and all(
        e["status"] == "Succeeded" for e in found) else None)(shadows(api, name)),
        "the three copies, none lost")
    copies.sort(key=lambda e: e["created_at"])
    for earlier, later in zip(copies, copies[1:], strict=False):
        # one at a time: each copy was sent once the one before had ended
        assert datetime.fromisoformat(later["created_at"]) >= datetime.fromisoformat(
            earlier["end_date"])


def test_a_copy_past_the_queue_bound_is_dropped_counted_and_the_call_answered(
        gristmill_env, api, archive, unique, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(low_latency, "SHADOW_QUEUE_LIMIT", 0)  # every copy is one too many
    name = f"drop-{unique}"
    champion = make_pipeline(api, archive, f"champ-{unique}", "champion", TEXT_IN, INFO_OUT)
    challenger = make_pipeline(api, archive, f"chall-{unique}", "challenger", TEXT_IN,
                               INFO_OUT)
    token = endpoint(api, champion, name, "low_latency")
    assert set_traffic(api, name, shadow=[challenger]).status_code == 200
    dropped = SHADOW_COPIES_DROPPED.labels(name)

    for number, text in enumerate(("a", "b"), start=1):
        assert ask(gristmill_env, name, token, text)[:2] == (champion, "champion")
        # queued (or dropped) before the call is answered
        assert dropped._value.get() == number
    answered = eventually(lambda: [e for e in executions(api, name) if not e["shadow"]
                                   and e["status"] == "Succeeded"] if len(
        executions(api, name)) == 2 else None, "the two calls' executions")
    assert len(answered) == 2  # and no copy
