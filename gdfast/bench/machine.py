"""What the run ran on (CPU, cores, memory, instruction sets, library versions), and the thread
count of the libraries it times."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any, Dict, Optional, Tuple

from .optional import dist_version


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


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def set_threads(n: int) -> None:
    """Thread count for gdfast and for torch (if imported; DeepSpeed's OpenMP loop follows
    torch's setting). NumPy's elementwise ops are single-threaded anyway."""
    import gdfast

    gdfast.set_num_threads(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)


def current_threads() -> Tuple[int, Optional[int]]:
    """gdfast's and torch's (None: not imported) thread counts, for restore_threads."""
    import gdfast

    torch = sys.modules.get("torch")
    return gdfast.get_num_threads(), (torch.get_num_threads() if torch is not None else None)


def restore_threads(saved: Tuple[int, Optional[int]]) -> None:
    import gdfast

    gdfast.set_num_threads(saved[0])
    torch = sys.modules.get("torch")
    if torch is not None and saved[1] is not None:
        torch.set_num_threads(saved[1])


def describe() -> Dict[str, Any]:
    import numpy as np

    import gdfast

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
            "torch": dist_version("torch"),
            "lion-pytorch": dist_version("lion-pytorch"),
            "pytorch_optimizer": dist_version("pytorch_optimizer"),
            "deepspeed": dist_version("deepspeed"),
        },
    }
