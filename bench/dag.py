"""Multi-step pipelines on `gristmill up` (local backend): what the graph scheduler adds.

Three graphs of trivial steps (each node a separate worker process, as any elastic
execution):
  chain     10 nodes, each reading the previous one's output
  fan       one source, 20 parallel nodes, one node reading all 20 (fan-out/fan-in)
  sleep     the same fan-out, each of the 20 nodes sleeping 1 s
From the executions' own timestamps, per node:
  schedule  from the moment its last upstream node ended (or the graph execution was
            created) to the moment the scheduler recorded the node's execution: the
            scheduler's own overhead (target: at most 20 ms per node)
  launch    from the node's execution being recorded to its runner's /start: the worker
            process's spawn and interpreter start, the same cost as a one-step run
  run       from /start to /finish
plus the last node's end to the graph's end (finishing the graph). For `sleep`, the time
from the first fan-out node's creation to the last one's end, against one such node run
alone (target: within 2x). Elastic nodes go through admission control (a worker capacity
per machine, by default one per 512 MiB of available memory, at least 2 per CPU, at most
32; the others wait), which bounds the sleeping fan-out.
`sleep_low_latency` runs the same fan-out through a low-latency endpoint deployment
(parallelism WIDTH): each node on the warm worker of its step, no admission queue, against
one node alone deployed the same way. Writes bench/results/dag.json.

    .venv/bin/python bench/dag.py [--runs 3]
    DAG_BENCH_WIDTH=10 .venv/bin/python bench/dag.py   # a narrower fan (dag_width10.json)
    DAG_BENCH_CAPACITY=24 .venv/bin/python bench/dag.py  # GRISTMILL_WORKER_CAPACITY=24
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from _env import start_env, step_archive  # type: ignore[import-not-found]

CAPACITY = os.environ.get("DAG_BENCH_CAPACITY")  # elastic admission capacity, if set
RESULTS = Path(__file__).parent / "results" / (
    ("dag.json" if os.environ.get("DAG_BENCH_WIDTH", "20") == "20"
     else f"dag_width{os.environ['DAG_BENCH_WIDTH']}.json").replace(
        ".json", f"_capacity{CAPACITY}.json" if CAPACITY else ".json"))
WIDTH = int(os.environ.get("DAG_BENCH_WIDTH", "20"))  # the figure is for 20
CHAIN = 10
CODE = f'''
import time


def noop(x: float) -> dict:
    return {{"y": x + 1}}


def nap(x: float) -> dict:
    time.sleep(1)
    return {{"y": x + 1}}


def gather({", ".join(f"a{i}: float" for i in range(WIDTH))}) -> dict:
    return {{"y": {" + ".join(f"a{i}" for i in range(WIDTH))}}}
'''
NUMBER_IN = [{"name": "x", "data_type": "number"}]
NUMBER_OUT = [{"name": "y", "data_type": "number"}]


def archive() -> bytes:
    return step_archive(CODE)


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def flat(prefix: str, items: list[dict[str, Any]]) -> dict[str, str]:
    return {f"{prefix}[{i}][{k}]": str(v) for i, item in enumerate(items)
            for k, v in item.items()}


def create_step(api: httpx.Client, name: str, function: str,
                inputs: list[dict[str, Any]]) -> None:
    created = api.post("/steps", data={
        "step_name": name, "function_path": "main.py", "function_name": function,
        **flat("inputs", inputs), **flat("outputs", NUMBER_OUT)},
        files={"step_file": ("step_file", archive())})
    if created.status_code != 201:
        raise SystemExit(f"step {name}: {created.text}")


def chain_nodes() -> list[dict[str, Any]]:
    nodes = [{"name": "n0", "step_name": "noop", "inputs": {"x": {"pipeline_input": "x"}}}]
    for i in range(1, CHAIN):
        nodes.append({"name": f"n{i}", "step_name": "noop",
                      "inputs": {"x": {"node": f"n{i - 1}", "output": "y"}}})
    return nodes


def fan_nodes(step: str) -> list[dict[str, Any]]:
    nodes = [{"name": "source", "step_name": "noop",
              "inputs": {"x": {"pipeline_input": "x"}}}]
    nodes += [{"name": f"f{i}", "step_name": step,
               "inputs": {"x": {"node": "source", "output": "y"}}} for i in range(WIDTH)]
    nodes.append({"name": "gather", "step_name": "gather",
                  "inputs": {f"a{i}": {"node": f"f{i}", "output": "y"}
                             for i in range(WIDTH)}})
    return nodes


def run_graph(api: httpx.Client, pipeline: str) -> dict[str, Any]:
    posted = api.post(f"/pipelines/{pipeline}/run", data={"json_inputs": json.dumps({"x": 1})})
    execution_id = posted.json()["execution_id"]
    while True:
        result = api.get(f"/executions/{execution_id}/outputs",
                         params={"wait_for_results": "true"}, follow_redirects=False)
        if result.status_code != 307:
            break
    if result.status_code != 200:
        raise SystemExit(f"{pipeline} failed: {result.text}")
    graph = api.get(f"/executions/{execution_id}").json()
    nodes = {s["name"]: {**s, "read": api.get(f"/executions/{s['execution_id']}").json()}
             for s in graph["steps"]}
    return {"graph": graph, "nodes": nodes}


def deploy_low_latency(api: httpx.Client, pipeline: str) -> str:
    """A low-latency endpoint of the pipeline, WIDTH executions at once per warm worker;
    its endpoint token."""
    created = api.post("/endpoints", json={
        "pipeline_name": pipeline, "name": f"{pipeline}-ll", "mode": "low_latency",
        "enable_parallel_executions": True, "max_parallel_executions_per_pod": WIDTH})
    if created.status_code != 201 or created.json()["status"] != "up":
        raise SystemExit(f"{pipeline}-ll: {created.text}")
    return str(created.json()["endpoint_token"])


def call_graph(api: httpx.Client, url: str, pipeline: str, token: str) -> dict[str, Any]:
    """One call of the pipeline's low-latency endpoint, read as run_graph reads a run."""
    answer = httpx.post(f"{url}/endpoints/{pipeline}-ll", json={"x": 1}, timeout=300,
                        headers={"Authorization": f"EndpointToken {token}"})
    if answer.status_code != 200:
        raise SystemExit(f"{pipeline}-ll failed: {answer.text}")
    graph = api.get(f"/executions/{answer.headers['craft-ai-execution-id']}").json()
    nodes = {s["name"]: {**s, "read": api.get(f"/executions/{s['execution_id']}").json()}
             for s in graph["steps"]}
    return {"graph": graph, "nodes": nodes}


def phases(run: dict[str, Any]) -> dict[str, Any]:
    graph, nodes = run["graph"], run["nodes"]
    created = ts(graph["created_at"])
    schedule, launch, own = [], [], []
    for step in graph["steps"]:
        node = nodes[step["name"]]["read"]
        ready_at = max((ts(nodes[u]["read"]["end_date"]) for u in step["upstream"]),
                       default=created)
        schedule.append(ts(node["created_at"]) - ready_at)
        launch.append(ts(node["start_date"]) - ts(node["created_at"]))
        own.append(ts(node["end_date"]) - ts(node["start_date"]))
    last_end = max(ts(nodes[s["name"]]["read"]["end_date"]) for s in graph["steps"])
    return {"total": ts(graph["end_date"]) - created, "schedule": schedule, "launch": launch,
            "run": own, "finish": ts(graph["end_date"]) - last_end}


def ms(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(values) * 1000, 1),
            "max_ms": round(max(values) * 1000, 1),
            "mean_ms": round(statistics.fmean(values) * 1000, 1)}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    measured = [phases(r) for r in runs]
    return {
        "graph_total": ms([m["total"] for m in measured]),
        "schedule_per_node": ms([v for m in measured for v in m["schedule"]]),
        "launch_per_node": ms([v for m in measured for v in m["launch"]]),
        "run_per_node": ms([v for m in measured for v in m["run"]]),
        "finish_graph": ms([m["finish"] for m in measured]),
    }


def fan_out_span(run: dict[str, Any]) -> float:
    reads = [run["nodes"][f"f{i}"]["read"] for i in range(WIDTH)]
    return max(ts(r["end_date"]) for r in reads) - min(ts(r["created_at"]) for r in reads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="gristmill-bench-") as work:
        service_log = Path(work) / "service.log"
        env = start_env(Path(work) / "env", log_path=service_log,
                        extra_env={"GRISTMILL_WORKER_CAPACITY": CAPACITY} if CAPACITY else None)
        try:
            token = httpx.post(f"{env.url}/api/v1/auth/refresh",
                               json={"refresh_token": env.token}).json()["access_token"]
            api = httpx.Client(base_url=f"{env.url}/api/v1", timeout=300,
                               headers={"Authorization": f"Bearer {token}"})
            create_step(api, "noop", "noop", NUMBER_IN)
            create_step(api, "nap", "nap", NUMBER_IN)
            create_step(api, "gather", "gather",
                        [{"name": f"a{i}", "data_type": "number"} for i in range(WIDTH)])
            for name, nodes, node in (("chain", chain_nodes(), f"n{CHAIN - 1}"),
                                      ("fan", fan_nodes("noop"), "gather"),
                                      ("sleep", fan_nodes("nap"), "gather"),
                                      ("one-nap", [{"name": "f0", "step_name": "nap",
                                                    "inputs": {"x": {"pipeline_input": "x"}}}],
                                       "f0")):
                response = api.post("/pipelines", json={
                    "pipeline_name": name, "nodes": nodes,
                    "outputs": [{"name": "y", "node": node, "output": "y"}]})
                if response.status_code != 201:
                    raise SystemExit(f"{name}: {response.text}")
            run_graph(api, "chain")  # warm-up, not counted
            started = time.perf_counter()
            runs: dict[str, list[dict[str, Any]]] = {}
            failures: dict[str, str] = {}
            for name in ("chain", "fan", "sleep", "one-nap"):
                try:
                    runs[name] = [run_graph(api, name) for _ in range(args.runs)]
                except (SystemExit, httpx.HTTPError) as failed:  # reported; the others run
                    failures[name] = str(failed)
                    print(f"{name}: {failed}")
                    errors = [line for line in service_log.read_text().splitlines()
                              if "Error" in line]
                    failures[name + "_service_errors"] = " | ".join(errors[-3:])
            for name in ("sleep", "one-nap"):
                try:
                    token = deploy_low_latency(api, name)
                    call_graph(api, env.url, name, token)  # warm-up, not counted
                    runs[f"{name}-ll"] = [call_graph(api, env.url, name, token)
                                          for _ in range(args.runs)]
                except (SystemExit, httpx.HTTPError) as failed:
                    failures[f"{name}-ll"] = str(failed)
                    print(f"{name}-ll: {failed}")
            elapsed = time.perf_counter() - started
        finally:
            env.stop()
    chain, fan = runs.get("chain", []), runs.get("fan", [])
    sleep, alone = runs.get("sleep", []), runs.get("one-nap", [])

    alone_reads = [r["nodes"]["f0"]["read"] for r in alone]
    one_node = [ts(r["end_date"]) - ts(r["created_at"]) for r in alone_reads]
    spans = [fan_out_span(r) for r in sleep]
    sleep_part: dict[str, Any] = summarize(sleep) if sleep else {}
    if sleep and one_node:
        sleep_part.update(fan_out_span=ms(spans), one_node_alone=ms(one_node),
                          ratio_p50=round(statistics.median(spans)
                                          / statistics.median(one_node), 2))
    ll_sleep, ll_alone = runs.get("sleep-ll", []), runs.get("one-nap-ll", [])
    ll_part: dict[str, Any] = summarize(ll_sleep) if ll_sleep else {}
    if ll_sleep and ll_alone:
        ll_one = [ts(r["nodes"]["f0"]["read"]["end_date"])
                  - ts(r["nodes"]["f0"]["read"]["created_at"]) for r in ll_alone]
        ll_spans = [fan_out_span(r) for r in ll_sleep]
        ll_part.update(fan_out_span=ms(ll_spans), one_node_alone=ms(ll_one),
                       ratio_p50=round(statistics.median(ll_spans)
                                       / statistics.median(ll_one), 2))
    results: dict[str, Any] = {
        "runs": args.runs,
        "width": WIDTH,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_1m": round(os.getloadavg()[0], 2),
                    "note": "shared machine, other engineers' test runs in parallel"},
        "chain_10": summarize(chain) if chain else {},
        "fan_out_fan_in": summarize(fan) if fan else {},
        "worker_capacity": CAPACITY or "default (1 per 512 MiB, 2 per CPU at least, 32 at most)",
        "sleep_fan_out": sleep_part,
        "sleep_fan_out_low_latency": ll_part,
        "failures": failures,
        "targets": {"schedule_per_node_ms_at_most": 20, "sleep_fan_out_ratio_at_most": 2.0},
        "bench_seconds": round(elapsed, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"multi-step pipelines, local backend, {args.runs} runs each (ms; p50 / max)")
    for name in ("chain_10", "fan_out_fan_in", "sleep_fan_out", "sleep_fan_out_low_latency"):
        part = results[name]
        if not part:
            print(f"{name}: failed")
            continue
        print(f"{name}: graph {part['graph_total']['p50_ms']}")
        for key in ("schedule_per_node", "launch_per_node", "run_per_node", "finish_graph"):
            print(f"  {key:<20}{part[key]['p50_ms']:>10}{part[key]['max_ms']:>10}")
    for label, part in (("elastic", sleep_part), ("low-latency", ll_part)):
        if "ratio_p50" in part:
            print(f"{label}: {WIDTH} x 1 s fan-out span {part['fan_out_span']['p50_ms']} vs "
                  f"one node alone {part['one_node_alone']['p50_ms']}: ratio "
                  f"{part['ratio_p50']}")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
