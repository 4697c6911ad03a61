"""CPU of the control service per authenticated API request, this tree against another.

Every SDK call but a warm endpoint call pays what a plain API request costs before its own
work: HTTP parsing, the middleware, routing, the access token's verification and its SDK
token's standing (read on every request), the handler's session. This bench sends
sequential requests that do little else, and reads the service's CPU time (/proc) around
each block:
  me        GET /api/v1/users/me              (the token's user, 200)
  missing   GET /api/v1/executions/{unknown}  (a read that finds nothing, 404)
  readyz    GET /readyz                       (no authentication: the floor)
With --baseline DIR, the control service of the source tree in DIR (same interpreter and
packages) runs beside this one, the blocks in turns and the order alternating, so a host
whose speed drifts slows both alike; --tree DIR2 runs this side from a source tree too
(both from PYTHONPATH: an A/A run of bench/warm_tail.py with this side on the editable
install had it up to 10 % behind). Writes bench/results/api_request.json.

    .venv/bin/python bench/api_request.py [--requests 2000] [--rounds 6] [--baseline DIR]
        [--tree DIR2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path

import httpx
import psutil
from _env import (  # type: ignore[import-not-found]
    BenchEnv,
    add_tree_option,
    source_tree_env,
    start_env,
    tree_env,
)

RESULTS = Path(__file__).parent / "results" / "api_request.json"
KINDS = {"me": "/api/v1/users/me", "missing": "/api/v1/executions/0000000000000000",
         "readyz": "/readyz"}
STATUS = {"me": 200, "missing": 404, "readyz": 200}


class Service:
    def __init__(self, name: str, env: BenchEnv) -> None:
        self.name, self.env = name, env
        token = httpx.post(f"{env.url}/api/v1/auth/refresh",
                           json={"refresh_token": env.token}).json()["access_token"]
        self.client = httpx.Client(base_url=env.url,
                                   headers={"Authorization": f"Bearer {token}"})
        self.process = psutil.Process(env.process.pid)
        self.us: dict[str, list[float]] = {kind: [] for kind in KINDS}

    def block(self, kind: str, requests: int) -> None:
        path = KINDS[kind]
        for _ in range(50):  # warm the connection and the caches
            self.client.get(path)
        before = self.process.cpu_times()
        for _ in range(requests):
            answer = self.client.get(path)
        after = self.process.cpu_times()
        if answer.status_code != STATUS[kind]:
            raise SystemExit(f"{self.name} {path}: {answer.status_code} {answer.text}")
        cpu = (after.user + after.system) - (before.user + before.system)
        self.us[kind].append(cpu / requests * 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--baseline", type=Path, default=None)
    add_tree_option(parser)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="gristmill-bench-") as work:
        services = [Service("this", start_env(Path(work) / "this",
                                              extra_env=tree_env(args.tree)))]
        if args.baseline is not None:
            services.append(Service("baseline", start_env(
                Path(work) / "baseline", extra_env=source_tree_env(args.baseline))))
        try:
            for round_ in range(args.rounds):
                for kind in KINDS:
                    order = services if round_ % 2 == 0 else services[::-1]
                    for service in order:
                        service.block(kind, args.requests)
        finally:
            for service in services:
                service.env.stop()

    results = {
        "requests_per_block": args.requests, "rounds": args.rounds,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_1m": round(os.getloadavg()[0], 1)},
        "cpu_us_per_request": {
            service.name: {kind: {"median": round(statistics.median(values)),
                                  "rounds": [round(v) for v in values]}
                           for kind, values in service.us.items()}
            for service in services},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"control service CPU per request, µs (median of {args.rounds} blocks of "
          f"{args.requests})")
    print(f"{'':<10}" + "".join(f"{service.name:>12}" for service in services))
    for kind in KINDS:
        print(f"{kind:<10}" + "".join(
            f"{statistics.median(service.us[kind]):>12.0f}" for service in services))
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
