"""Readings of this machine and of processes on it: psutil, /proc, and NVML when the
``pynvml`` module and an NVIDIA driver are present. Synchronous and cheap; the sampler
calls them from a thread."""

from __future__ import annotations

import contextlib
import importlib
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger("gristmill.resources")

# Interfaces whose traffic is not the machine's own (loopback, container and pod plumbing:
# their bytes also cross the physical interface). The Prometheus adapter uses the same.
VIRTUAL_INTERFACES = re.compile(
    r"^(lo|veth.*|docker.*|br-.*|cni.*|flannel.*|cali.*|vxlan.*|tunl.*|virbr.*|eni.*"
    r"|kube-ipvs.*|weave.*|cilium.*|lxc.*|genev_sys.*|nodelocaldns.*)$")


@dataclass(frozen=True)
class GpuReading:
    util_percent: float  # mean over the GPUs
    vram_used_bytes: int
    vram_total_bytes: int
    # GPU memory per process (summed over GPUs)
    process_memory: dict[int, int] = field(default_factory=dict)


class GpuProbe:
    """NVIDIA GPUs through NVML. ``load()`` answers None where there are none (no
    ``pynvml``, no driver, no device), and the sampler then records no GPU columns."""

    def __init__(self, nvml: Any, handles: list[Any]) -> None:
        self._nvml = nvml
        self._handles = handles

    @classmethod
    def load(cls) -> GpuProbe | None:
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError:
            return None
        try:
            nvml.nvmlInit()
        except Exception as exc:  # no driver, or no device
            log.info("NVML unavailable (%s): no GPU metrics", exc)
            return None
        try:
            handles = [nvml.nvmlDeviceGetHandleByIndex(i)
                       for i in range(int(nvml.nvmlDeviceGetCount()))]
        except Exception as exc:
            log.warning("NVML could not list the GPUs (%s): no GPU metrics", exc)
            handles = []
        if not handles:
            with contextlib.suppress(Exception):
                nvml.nvmlShutdown()
            return None
        return cls(nvml, handles)

    @property
    def count(self) -> int:
        return len(self._handles)

    def read(self) -> GpuReading:
        nvml = self._nvml
        utils: list[float] = []
        used = total = 0
        per_process: dict[int, int] = {}
        for handle in self._handles:
            utils.append(float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu))
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            used += int(memory.used)
            total += int(memory.total)
            try:
                processes = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
            except Exception:  # not supported on this device
                processes = []
            for process in processes:
                amount = getattr(process, "usedGpuMemory", None)
                if isinstance(amount, int):  # None where the driver will not say
                    per_process[int(process.pid)] = per_process.get(int(process.pid), 0) + amount
        return GpuReading(sum(utils) / len(utils), used, total, per_process)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._nvml.nvmlShutdown()


@dataclass(frozen=True)
class HostReading:
    cpu_percent: float | None  # None on the first reading: a rate needs two
    ram_used_bytes: int
    ram_total_bytes: int
    disk_used_bytes: int
    disk_total_bytes: int
    network_in_bytes_per_s: float | None
    network_out_bytes_per_s: float | None
    gpu: GpuReading | None


def _cpu_counters() -> tuple[float, float]:
    """(busy, total) CPU seconds of the machine, all cores, as psutil.cpu_percent counts
    them (guest time is already in user time on Linux)."""
    times = psutil.cpu_times()
    total = sum(times)
    total -= getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
    idle = times.idle + getattr(times, "iowait", 0.0)
    return total - idle, total


def _network_counters() -> tuple[int, int]:
    received = sent = 0
    for name, counters in psutil.net_io_counters(pernic=True).items():
        if not VIRTUAL_INTERFACES.match(name):
            received += counters.bytes_recv
            sent += counters.bytes_sent
    return received, sent


class HostProbe:
    """The machine: CPU and network as rates since the previous reading; RAM; the disk
    holding ``disk_path`` (the data directory); GPUs through ``gpu``."""

    def __init__(self, disk_path: Path, gpu: GpuProbe | None = None) -> None:
        self.disk_path = disk_path
        self.gpu = gpu
        self._last: tuple[float, float, float, int, int] | None = None

    def read(self) -> HostReading:
        now = time.monotonic()
        busy, total = _cpu_counters()
        received, sent = _network_counters()
        cpu = net_in = net_out = None
        if self._last is not None:
            then, busy0, total0, received0, sent0 = self._last
            if total > total0:
                cpu = max(0.0, min(100.0, 100.0 * (busy - busy0) / (total - total0)))
            elapsed = now - then
            if elapsed > 0:
                # counters restart when an interface goes away: no negative rates
                net_in = max(0, received - received0) / elapsed
                net_out = max(0, sent - sent0) / elapsed
        self._last = (now, busy, total, received, sent)
        memory = psutil.virtual_memory()
        disk = psutil.disk_usage(str(self.disk_path))
        gpu = None
        if self.gpu is not None:
            try:
                gpu = self.gpu.read()
            except Exception as exc:
                log.warning("reading the GPUs failed: %s", exc)
        return HostReading(
            cpu_percent=cpu,
            ram_used_bytes=int(memory.total - memory.available),
            ram_total_bytes=int(memory.total),
            # as node exporter dashboards count it: what is not available to users
            disk_used_bytes=int(disk.total - disk.free),
            disk_total_bytes=int(disk.total),
            network_in_bytes_per_s=net_in,
            network_out_bytes_per_s=net_out,
            gpu=gpu,
        )


@dataclass(frozen=True)
class ProcessReading:
    # user + system seconds of the process, of its children it has reaped, and of its
    # live descendants when they were read
    cpu_time_s: float
    rss_bytes: int  # resident memory of the process (and live descendants) now
    peak_rss_bytes: int  # the kernel's high-water mark of the process (VmHWM), or rss
    pids: tuple[int, ...]


def _high_water_mark(pid: int) -> int | None:
    """VmHWM: the most resident memory the process ever had (Linux)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _own_cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system + getattr(times, "children_user", 0.0)
                 + getattr(times, "children_system", 0.0))


def read_process(process: psutil.Process,
                 descendants: Iterable[psutil.Process] = ()) -> ProcessReading | None:
    """One process (with the given live descendants); None once it is gone."""
    try:
        with process.oneshot():
            cpu = _own_cpu(process)
            rss = int(process.memory_info().rss)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    peak = _high_water_mark(process.pid) or rss
    pids = [process.pid]
    for child in descendants:
        try:
            with child.oneshot():
                cpu += _own_cpu(child)
                rss += int(child.memory_info().rss)
            pids.append(child.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return ProcessReading(cpu, rss, max(peak, rss), tuple(pids))


def children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids, over the whole machine (one pass over /proc)."""
    children: dict[int, list[int]] = {}
    for process in psutil.process_iter(["ppid"]):
        ppid = process.info.get("ppid")
        if isinstance(ppid, int):
            children.setdefault(ppid, []).append(process.pid)
    return children


def descendants_of(pid: int, children: dict[int, list[int]]) -> list[psutil.Process]:
    found: list[psutil.Process] = []
    stack = list(children.get(pid, ()))
    seen = {pid}
    while stack:
        child = stack.pop()
        if child in seen:
            continue
        seen.add(child)
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            found.append(psutil.Process(child))
        stack.extend(children.get(child, ()))
    return found
