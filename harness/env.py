"""The machine a run measured: devices, CPU, library versions, the code's git commit.
Recorded once per run in ``runs.env_json`` so numbers are never separated from their context."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from typing import Any

import torch

from harness.version import __version__


def available_devices() -> list[str]:
    """Every device torch can use here: ``cpu``, then ``cuda:N`` for each GPU, then ``mps``."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def git_commit(path: str = ".") -> str | None:
    """The commit of the checkout the user runs in (the code under test), if it is one."""
    try:
        out = subprocess.run(
            ["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment(devices: list[str], threads: int) -> dict[str, Any]:
    info: dict[str, Any] = {
        "batchbench_version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": platform.node(),
        "torch_version": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "devices": {d: device_name(d) for d in devices},
        "device_memory_bytes": {d: device_memory(d) for d in devices},
        "git_commit": git_commit(),
    }
    return info


def device_memory(device: str) -> int | None:
    """The device's memory capacity: a GPU's total memory, or the machine's physical RAM."""
    if device.startswith("cuda"):
        return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)
    if device == "cpu":
        import psutil

        return int(psutil.virtual_memory().total)
    return None


def device_name(device: str) -> str:
    """A human name for the device: the GPU's model, or the CPU's."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    if device == "mps":
        return "Apple MPS"
    return cpu_model()
