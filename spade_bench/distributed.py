"""torchrun/DDP set-up and rank-0 helpers.

`spade-bench train` under `torchrun --nproc_per_node N` (or a multi-node rendezvous) finds
RANK, LOCAL_RANK and WORLD_SIZE in the environment and runs DDP: NCCL on GPUs, gloo on
CPUs. Only rank 0 logs and writes files.
"""
from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

from spade_bench.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' picks CUDA when present; under DDP each process takes cuda:LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {name!r} is not a device name; use auto, cpu, cuda or cuda:N "
                          f"(--device, or --set train.device for training)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} was asked for but no CUDA device is available; use the CPU "
                              f"(--device cpu, or --set train.device=cpu for training)")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def init_distributed(device_name: str = "auto") -> tuple[DistInfo, torch.device]:
    """Initialise the process group when launched by torchrun; otherwise a single process."""
    if not launched_by_torchrun():
        return DistInfo(), resolve_device(device_name)
    info = DistInfo(rank=int(os.environ["RANK"]), local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                    world_size=int(os.environ["WORLD_SIZE"]))
    device = resolve_device(device_name, info.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info, device


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def available_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    for path, parse in (("/sys/fs/cgroup/cpu.max", _cgroup2_quota), ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", None)):
        try:
            text = _read(path)
        except OSError:
            continue
        if parse is not None:
            quota = parse(text)
        else:  # cgroup v1: quota and period in two files; -1 means no limit
            try:
                q = int(text.strip())
                period = int(_read("/sys/fs/cgroup/cpu/cpu.cfs_period_us").strip())
                quota = q / period if q > 0 and period > 0 else None
            except (OSError, ValueError):
                quota = None
        if quota:
            cores = min(cores, max(1, math.ceil(quota)))
        break
    return max(1, cores)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _cgroup2_quota(text: str):
    parts = text.split()
    if len(parts) == 2 and parts[0] != "max":
        try:
            return int(parts[0]) / int(parts[1])
        except (ValueError, ZeroDivisionError):
            return None
    return None


def resolve_threads(threads: int, info: DistInfo = DistInfo()) -> int:
    """train.threads -> the torch intra-op thread count: the setting itself when > 0; with 0,
    OMP_NUM_THREADS when the environment sets it, else this process's share of the cores it
    may use (split among the processes torchrun started on this machine, LOCAL_WORLD_SIZE)."""
    if threads > 0:
        return threads
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    local_procs = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size if info.is_distributed else 1) or 1)
    return max(1, available_cores() // max(1, local_procs))


@contextlib.contextmanager
def torch_threads(count: int):
    """Run a block with `count` intra-op threads, then restore the previous count.

    A CPU result depends on the thread count (float sums are split differently), so work whose
    output must be the same for the same command, such as the evaluator's weights (their hash
    is its identity) or a run's scores, pins its own count instead of inheriting whatever ran
    earlier in the process (a trainer sets train.threads; pytest sets 1)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside torch.compile and DDP wrappers."""
    module = getattr(module, "_orig_mod", module)  # torch.compile
    return getattr(module, "module", module)        # DDP


def wrap_for_training(nets, info: DistInfo, device: torch.device, *, compile: bool) -> None:
    """Wrap a trainer's `nets` (generator, discriminator, encoder attributes) in place: DDP under
    torchrun, then torch.compile for the generator and discriminator when asked."""
    if info.is_distributed:
        ids = [device.index] if device.type == "cuda" else None
        nets.generator = DDP(nets.generator, device_ids=ids)
        nets.discriminator = DDP(nets.discriminator, device_ids=ids)
        if nets.encoder is not None:
            nets.encoder = DDP(nets.encoder, device_ids=ids)
    if compile:
        nets.generator = torch.compile(nets.generator)
        nets.discriminator = torch.compile(nets.discriminator)


def all_reduce_max(value: float, device: torch.device) -> float:
    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def prepare_batchnorm(module: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """Multi-GPU: every batch norm becomes SyncBatchNorm. CPU DDP: gloo cannot sync batch
    norm, so SyncBatchNorm falls back to per-rank BatchNorm (with a warning)."""
    if not info.is_distributed:
        return module
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if any(isinstance(m, nn.SyncBatchNorm) for m in module.modules()):
        if info.is_main:
            warnings.warn("DDP on CPU: SyncBatchNorm needs GPUs; using per-rank BatchNorm statistics",
                          stacklevel=2)
        return revert_sync_batchnorm(module)
    return module


def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace nn.SyncBatchNorm layers by nn.BatchNorm2d with the same parameters and buffers."""
    out = module
    if isinstance(module, nn.SyncBatchNorm):
        out = nn.BatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                             module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        if module.track_running_stats:
            out.running_mean = module.running_mean
            out.running_var = module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, revert_sync_batchnorm(child))
    return out
