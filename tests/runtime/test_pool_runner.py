"""The runner's pool mode (``python -m gristmill.runtime pool``) waiting for its execution:
what it sends, what it does with each answer. The whole path (claim, run, exit) runs in
tests/platform/backends/test_elastic_pool.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gristmill.runtime import pool as pool_mode

ENV = {
    "GRISTMILL_ENVIRONMENT_URL": "http://control:8765",
    "GRISTMILL_POOL_TOKEN": "pool-token",
    "GRISTMILL_POOL_STEP_ID": "step-1",
    "GRISTMILL_POD_NAME": "gm-pool-step-1-ab12",
    "GRISTMILL_POOL_CLAIM_WAIT_S": "5",
}


class Server:
    """Answers claims from a script of (status, body)."""

    def __init__(self, *answers: tuple[int, Any]) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[str, dict[str, Any], dict[str, str], float]] = []

    def __call__(self, url: str, body: bytes, headers: dict[str, str], timeout: float
                 ) -> tuple[int, bytes]:
        self.sent.append((url, json.loads(body), headers, timeout))
        status, answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return status, json.dumps(answer).encode() if answer is not None else b""


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_it_waits_through_empty_answers_then_takes_its_execution() -> None:
    given = {"execution_id": "e1", "env": {"GRISTMILL_SDK_TOKEN": "gm_x"}}
    server = Server((204, None), (204, None), (200, given))
    assert pool_mode.wait_for_execution(dict(ENV), post=server) == given
    url, body, headers, timeout = server.sent[0]
    assert url == "http://control:8765/api/v1/runtime/pool/claim"
    assert body == {"pod": "gm-pool-step-1-ab12", "step_id": "step-1", "wait_s": 5.0}
    assert headers["X-Gristmill-Pool-Token"] == "pool-token"
    assert timeout > 5  # longer than the server's own wait
    assert len(server.sent) == 3


@pytest.mark.parametrize("status", [401, 403, 404, 409])
def test_a_refusal_ends_the_wait_with_the_servers_message(status: int) -> None:
    server = Server((status, {"message": "a pool pod runs exactly one execution"}))
    with pytest.raises(pool_mode.Refused, match="exactly one execution") as refused:
        pool_mode.wait_for_execution(dict(ENV), post=server)
    assert str(status) in str(refused.value)


def test_an_unreachable_control_service_is_retried_then_given_up() -> None:
    clock = Clock()
    answers = [(0, OSError("connection refused"))] * 200
    server = Server((503, {"message": "busy"}), *answers)
    with pytest.raises(pool_mode.Refused, match="unreachable"):
        pool_mode.wait_for_execution(dict(ENV), post=server, clock=clock, sleep=clock.sleep)
    assert clock.now > pool_mode.UNREACHABLE_BUDGET_S
    recovered = Server((0, OSError("reset")), (200, {"execution_id": "e", "env": {}}))
    assert pool_mode.wait_for_execution(dict(ENV), post=recovered, clock=Clock(),
                                        sleep=lambda _: None) is not None


def test_past_its_idle_limit_the_pod_stops_waiting() -> None:
    clock = Clock()

    def post(url: str, body: bytes, headers: dict[str, str], timeout: float
             ) -> tuple[int, bytes]:
        clock.now += 5
        return 204, b""

    env = {**ENV, "GRISTMILL_POOL_IDLE_LIMIT_S": "12"}
    assert pool_mode.wait_for_execution(env, post=post, clock=clock) is None
    assert clock.now == 15


def test_a_pool_pod_without_its_configuration_is_refused() -> None:
    env = {k: v for k, v in ENV.items() if k != "GRISTMILL_POOL_TOKEN"}
    with pytest.raises(pool_mode.Refused, match="GRISTMILL_POOL_TOKEN"):
        pool_mode.wait_for_execution(env, post=Server())
    assert pool_mode.pool(env) == 3


def test_an_answer_without_an_environment_is_refused() -> None:
    with pytest.raises(pool_mode.Refused, match="no assignment"):
        pool_mode.wait_for_execution(dict(ENV), post=Server((200, {"execution_id": "e"})))
