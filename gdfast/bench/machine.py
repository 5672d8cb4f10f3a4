"""What the run ran on: CPU, cores, memory, instruction sets, library versions."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any, Dict, Optional


def meminfo() -> Dict[str, int]:
    """/proc/meminfo in bytes (empty off Linux)."""
    out: Dict[str, int] = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    out[key] = int(parts[0]) * (1024 if len(parts) > 1 else 1)
    except OSError:
        pass
    return out


def available_memory() -> Optional[int]:
    """Bytes of memory available to new allocations without swapping (None if unknown)."""
    info = meminfo()
    if "MemAvailable" in info:
        return info["MemAvailable"]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def version(dist: str) -> Optional[str]:
    """Installed distribution version, without importing it."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def describe() -> Dict[str, Any]:
    import numpy as np

    import gdfast

    from .impls import cpu_count

    info = meminfo()
    l3 = _read("/sys/devices/system/cpu/cpu0/cache/index3/size")
    return {
        "cpu": cpu_model(),
        "cpus_usable": cpu_count(),
        "cpus_total": os.cpu_count(),
        "l3_cache": l3,
        "memory_total_bytes": info.get("MemTotal"),
        "memory_available_bytes": available_memory(),
        "transparent_hugepage": _read("/sys/kernel/mm/transparent_hugepage/enabled"),
        "isa": gdfast.isa_info(),
        "gdfast_threads_default": gdfast.get_num_threads(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "versions": {
            "gdfast": gdfast.__version__,
            "numpy": np.__version__,
            "torch": version("torch"),
            "lion-pytorch": version("lion-pytorch"),
            "deepspeed": version("deepspeed"),
        },
    }
