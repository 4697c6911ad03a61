"""Data store throughput: 1 GiB through the SDK against `gristmill up`, beside `cp` and
beside a bare uvicorn app moving the same bytes, on the local backend and on the S3 backend
(a moto server in its own process).

The bare app (BARE_APP below) is the wire's reference: the same server stack (uvicorn,
Starlette) with nothing but a PUT that writes the body to a file and a GET that streams a
file back, called by a plain httpx client reading and writing 1 MiB pieces. No signing, no
database, no multipart: what the local backend costs on top of that is its own overhead.

Prints MB/s for cp, the bare app, SDK upload and SDK download on each backend, their ratios
to cp and to the bare app, and the control service's peak RSS growth during each transfer;
writes the figures to bench/results/datastore.json (the S3 ones under "s3").

    .venv/bin/python bench/datastore.py [--size-mib 1024] [--repeat 3] [--s3-size-mib N]

moto keeps objects in its own process and is far slower than a real S3 endpoint: the S3
figures measure the backend's overhead path end to end, not what AWS would deliver.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
from _env import BenchEnv, free_port, start_env  # type: ignore[import-not-found]

from gristmill import Gristmill

RESULTS = Path(__file__).parent / "results" / "datastore.json"
MIB = 1024 * 1024
BARE_APP = """
import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

ROOT = Path(os.environ["BARE_ROOT"])


async def put(request: Request) -> Response:
    with (ROOT / "object.bin").open("wb") as handle:
        async for chunk in request.stream():
            handle.write(chunk)
    return Response(status_code=204)


async def get(request: Request) -> FileResponse:
    return FileResponse(ROOT / "object.bin")


app = Starlette(routes=[Route("/object", put, methods=["PUT"]),
                        Route("/object", get, methods=["GET"])])
"""


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


def wait_for(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.1)


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto S3 server in its own process, so it does not share the GIL with the SDK."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", "from moto.server import main; main()",
         "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url, process, "the moto server")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextlib.contextmanager
def s3_env(data_dir: Path, endpoint: str) -> Iterator[BenchEnv]:
    """`gristmill up` on the S3 backend: settings through GRISTMILL_* variables, fake
    credentials (moto accepts any), a bucket created first."""
    import boto3

    keys = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **keys
                 ).create_bucket(Bucket="gristmill-bench")
    variables = {
        "GRISTMILL_DATASTORE_BACKEND": "s3", "GRISTMILL_S3_BUCKET": "gristmill-bench",
        "GRISTMILL_S3_REGION": "us-east-1", "GRISTMILL_S3_ENDPOINT_URL": endpoint,
        "GRISTMILL_S3_ACCESS_KEY_ID": "bench", "GRISTMILL_S3_SECRET_ACCESS_KEY": "bench",
    }
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)  # start_env hands os.environ to `gristmill up`
    try:
        env = start_env(data_dir)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    try:
        yield env
    finally:
        env.stop()


@contextlib.contextmanager
def bare_server(work: Path) -> Iterator[str]:
    """The bare app under uvicorn, in its own process like the control service."""
    (work / "bare").mkdir()
    (work / "bare_app.py").write_text(BARE_APP)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bare_app:app", "--port", str(port),
         "--log-level", "warning", "--no-access-log"],
        cwd=work, env={**os.environ, "BARE_ROOT": str(work / "bare")},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/object"
    try:
        wait_for(url, process, "the bare app")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def bare_transfers(url: str, source: Path, size: int, repeat: int, work: Path
                   ) -> dict[str, list[float]]:
    def pieces() -> Iterator[bytes]:
        with source.open("rb") as handle:
            while piece := handle.read(MIB):
                yield piece

    def upload() -> None:
        response = client.put(url, content=pieces(), headers={"Content-Length": str(size)})
        response.raise_for_status()

    def download(target: Path) -> None:
        with client.stream("GET", url) as response, target.open("wb") as handle:
            response.raise_for_status()
            for piece in response.iter_raw(MIB):
                handle.write(piece)

    figures: dict[str, list[float]] = {"upload": [], "download": []}
    with httpx.Client(timeout=300, trust_env=False) as client:
        for i in range(repeat):
            figures["upload"].append(timed(upload))
            target = work / f"bare-down-{i}.bin"
            figures["download"].append(timed(lambda t=target: download(t)))
            if target.stat().st_size != size:
                raise SystemExit("the bare app returned another size: the benchmark is invalid")
            target.unlink()
    return figures


def transfers(env: BenchEnv, source: Path, size: int, repeat: int, work: Path
              ) -> dict[str, list[float]]:
    """SDK upload and download of ``source``, ``repeat`` times, with the control
    service's RSS growth during each."""
    sdk = Gristmill(environment_url=env.url, sdk_token=env.token, progress=False)
    figures: dict[str, list[float]] = {"upload": [], "download": [], "upload_rss": [],
                                       "download_rss": []}
    for i in range(repeat):
        with RssSampler(env.process.pid) as rss:
            figures["upload"].append(timed(lambda: sdk.upload_data_store_object(
                str(source), "bench/1gib.bin")))
        figures["upload_rss"].append(rss.peak - rss.baseline)
        target = work / f"down-{i}.bin"
        with RssSampler(env.process.pid) as rss:
            figures["download"].append(timed(lambda t=target: sdk.download_data_store_object(
                "bench/1gib.bin", str(t))))
        figures["download_rss"].append(rss.peak - rss.baseline)
        if target.stat().st_size != size:
            raise SystemExit("downloaded size differs: the benchmark is invalid")
        target.unlink()
    sdk.delete_data_store_object("bench/1gib.bin")
    return figures


def summary(figures: dict[str, list[float]], size: int, cp_mib_s: float,
            bare: dict[str, float]) -> dict[str, object]:
    up = size / MIB / statistics.median(figures["upload"])
    down = size / MIB / statistics.median(figures["download"])
    return {
        "upload_mib_s": round(up, 1),
        "download_mib_s": round(down, 1),
        "upload_vs_cp": round(up / cp_mib_s, 3),
        "download_vs_cp": round(down / cp_mib_s, 3),
        "upload_vs_bare": round(up / bare["upload_mib_s"], 3),
        "download_vs_bare": round(down / bare["download_mib_s"], 3),
        "server_rss_growth_upload_mib": round(max(figures["upload_rss"]) / MIB, 1),
        "server_rss_growth_download_mib": round(max(figures["download_rss"]) / MIB, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--s3-size-mib", type=int, default=None,
                        help="object size for the S3 backend (default: --size-mib)")
    args = parser.parse_args()
    size = args.size_mib * MIB
    s3_size = (args.s3_size_mib or args.size_mib) * MIB

    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="gristmill-bench-", dir=os.environ.get("BENCH_DIR")))
    try:
        source = work / "source.bin"
        make_file(source, size)
        cp_s = []
        for i in range(args.repeat):
            copy = work / f"copy-{i}.bin"
            cp_s.append(timed(lambda c=copy: subprocess.run(["cp", str(source), str(c)],
                                                            check=True)))
            copy.unlink()
        with bare_server(work) as url:
            bare_s = bare_transfers(url, source, size, args.repeat, work)
        env = start_env(work / "env")
        try:
            local = transfers(env, source, size, args.repeat, work)
        finally:
            env.stop()
        s3_source = source
        if s3_size != size:
            s3_source = work / "s3-source.bin"
            make_file(s3_source, s3_size)
        with moto_server() as endpoint, s3_env(work / "s3-env", endpoint) as env:
            s3 = transfers(env, s3_source, s3_size, args.repeat, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    cp_mib_s = size / MIB / statistics.median(cp_s)
    bare = {f"{way}_mib_s": round(size / MIB / statistics.median(bare_s[way]), 1)
            for way in ("upload", "download")}
    results = {
        "size_mib": args.size_mib,
        "repeat": args.repeat,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "system": platform.platform(),
                    # a shared machine: what else ran, at the start and at the end
                    "load_average_1m": [round(load_before, 1), round(os.getloadavg()[0], 1)]},
        "cp_mib_s": round(cp_mib_s, 1),
        "bare_uvicorn": bare,
        **summary(local, size, cp_mib_s, bare),
        "raw_seconds": {"cp": cp_s, "upload": local["upload"], "download": local["download"],
                        "bare_upload": bare_s["upload"], "bare_download": bare_s["download"]},
        "s3": {
            "size_mib": s3_size // MIB,
            "store": "moto server (own process) on 127.0.0.1",
            **summary(s3, s3_size, cp_mib_s, bare),
            "raw_seconds": {"upload": s3["upload"], "download": s3["download"]},
        },
        "targets": {"vs_bare_at_least": 0.8, "rss_growth_below_mib": 100},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    s3_results = results["s3"]
    assert isinstance(s3_results, dict)
    print(f"{'transfer':<16}{'MiB/s':>10}{'vs cp':>10}{'vs bare':>10}{'server RSS +MiB':>18}")
    print(f"{'cp':<16}{results['cp_mib_s']:>10}{1.0:>10}{'-':>10}{'-':>18}")
    for way in ("upload", "download"):
        print(f"{'bare ' + way:<16}{bare[f'{way}_mib_s']:>10}"
              f"{round(bare[f'{way}_mib_s'] / cp_mib_s, 3):>10}{1.0:>10}{'-':>18}")
    for label, figures in (("", results), ("s3 ", s3_results)):
        for way in ("upload", "download"):
            print(f"{label + way:<16}{figures[f'{way}_mib_s']:>10}{figures[f'{way}_vs_cp']:>10}"
                  f"{figures[f'{way}_vs_bare']:>10}"
                  f"{figures[f'server_rss_growth_{way}_mib']:>18}")
    s3_note = "" if s3_size == size else f"; S3: {s3_size // MIB} MiB"
    print(f"(median of {args.repeat}, {args.size_mib} MiB{s3_note}; load average "
          f"{results['machine']['load_average_1m']}; written to {RESULTS})")


if __name__ == "__main__":
    main()
