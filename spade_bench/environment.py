"""What a run ran on: the environment record (RUN/env.json, the bench record), the hardware
name, and peak memory (CUDA allocator, or the process's resident set on a CPU)."""
from __future__ import annotations

import os
import platform
import sys
from typing import Any

import torch
import torchvision

import spade_bench
from spade_bench.distributed import DistInfo
from spade_bench.numerics import numerics_state
from spade_bench.run_folder import code_state


def environment_record(device: torch.device, info: DistInfo, *, numerics_mode: str = "native",
                       amp: bool = False) -> dict[str, Any]:
    """Versions, host, device, world size, threads, argv, the code state (git commit, dirty) and,
    under "numerics", what decides the run's bits (`spade_bench.numerics.numerics_state`)."""
    rec = {
        "python": sys.version.split()[0], "torch": torch.__version__, "torchvision": torchvision.__version__,
        "spade_bench": spade_bench.__version__, "platform": platform.platform(),
        "hostname": platform.node(), "device": str(device), "world_size": info.world_size,
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "argv": sys.argv,
    }
    code = code_state()
    rec["git_commit"], rec["git_dirty"] = code["commit"], code["dirty"]
    if device.type == "cuda":
        rec["cuda"] = torch.version.cuda
        rec["cudnn"] = torch.backends.cudnn.version()
        rec["gpu"] = torch.cuda.get_device_name(device)
    rec["numerics"] = numerics_state(device, mode=numerics_mode, amp=amp)
    return rec


def hardware_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def peak_memory_gib(device: torch.device) -> float:
    """CUDA: peak allocated. CPU: the process's lifetime peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    import resource  # function-local: Unix only
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # Linux: KiB


def current_rss_gib() -> float:
    """Resident set size now (Linux /proc; 0 elsewhere). Sampled during a run, its maximum is
    that run's CPU peak even when several runs share one process (as `ablate` does)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 30
    except (OSError, ValueError, IndexError):
        return 0.0
