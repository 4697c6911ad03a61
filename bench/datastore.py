"""Data store throughput: 1 GiB through the SDK against `gristmill up`, beside `cp`.

Prints MB/s for cp, SDK upload and SDK download, their ratios to cp, and the control
service's peak RSS growth during each transfer; writes the figures to
bench/results/datastore.json.

    .venv/bin/python bench/datastore.py [--size-mib 1024] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
from _env import start_env  # type: ignore[import-not-found]

from gristmill import Gristmill

RESULTS = Path(__file__).parent / "results" / "datastore.json"
MIB = 1024 * 1024


class RssSampler:
    """Samples a process's RSS every 20 ms on a thread; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> RssSampler:
        self.baseline = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def make_file(path: Path, size: int) -> None:
    block = os.urandom(4 * MIB)
    with path.open("wb") as handle:
        written = 0
        while written < size:
            chunk = block[: min(len(block), size - written)]
            handle.write(chunk)
            written += len(chunk)


def timed(action: Callable[[], object]) -> float:
    # Start every measurement with no dirty pages pending: otherwise whichever transfer
    # runs after another pays for the previous one's writeback, and cp looks 10x faster
    # or slower depending on its turn.
    os.sync()
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib * MIB

    work = Path(tempfile.mkdtemp(prefix="gristmill-bench-", dir=os.environ.get("BENCH_DIR")))
    env = start_env(work / "env")
    try:
        source = work / "source.bin"
        make_file(source, size)
        sdk = Gristmill(environment_url=env.url, sdk_token=env.token, progress=False)
        cp_s, up_s, down_s, up_rss, down_rss = [], [], [], [], []
        for i in range(args.repeat):
            copy = work / f"copy-{i}.bin"
            cp_s.append(timed(lambda c=copy: subprocess.run(["cp", str(source), str(c)],
                                                            check=True)))
            copy.unlink()
            with RssSampler(env.process.pid) as rss:
                up_s.append(timed(lambda: sdk.upload_data_store_object(str(source),
                                                                       "bench/1gib.bin")))
            up_rss.append(rss.peak - rss.baseline)
            target = work / f"down-{i}.bin"
            with RssSampler(env.process.pid) as rss:
                down_s.append(timed(lambda t=target: sdk.download_data_store_object(
                    "bench/1gib.bin", str(t))))
            down_rss.append(rss.peak - rss.baseline)
            if target.stat().st_size != size:
                raise SystemExit("downloaded size differs: the benchmark is invalid")
            target.unlink()
        sdk.delete_data_store_object("bench/1gib.bin")
    finally:
        env.stop()
        shutil.rmtree(work, ignore_errors=True)

    def mbps(seconds: list[float]) -> float:
        return size / MIB / statistics.median(seconds)

    results = {
        "size_mib": args.size_mib,
        "repeat": args.repeat,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "system": platform.platform()},
        "cp_mib_s": round(mbps(cp_s), 1),
        "upload_mib_s": round(mbps(up_s), 1),
        "download_mib_s": round(mbps(down_s), 1),
        "upload_vs_cp": round(mbps(up_s) / mbps(cp_s), 3),
        "download_vs_cp": round(mbps(down_s) / mbps(cp_s), 3),
        "server_rss_growth_upload_mib": round(max(up_rss) / MIB, 1),
        "server_rss_growth_download_mib": round(max(down_rss) / MIB, 1),
        "raw_seconds": {"cp": cp_s, "upload": up_s, "download": down_s},
        "targets": {"vs_cp_at_least": 0.5, "rss_growth_below_mib": 100},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'transfer':<12}{'MiB/s':>10}{'vs cp':>10}{'server RSS +MiB':>18}")
    print(f"{'cp':<12}{results['cp_mib_s']:>10}{1.0:>10}{'-':>18}")
    print(f"{'upload':<12}{results['upload_mib_s']:>10}{results['upload_vs_cp']:>10}"
          f"{results['server_rss_growth_upload_mib']:>18}")
    print(f"{'download':<12}{results['download_mib_s']:>10}{results['download_vs_cp']:>10}"
          f"{results['server_rss_growth_download_mib']:>18}")
    print(f"(median of {args.repeat}, {args.size_mib} MiB; written to {RESULTS})")


if __name__ == "__main__":
    main()
