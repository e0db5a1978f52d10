"""Helpers shared by the CUDA-path tests (tests/gpu/conftest.py holds the fixtures)."""
from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from runners.bench import bench_config

# Parametrise a check over its CPU twin and the CUDA path.
TARGETS = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def tiny_config(*overrides: str):
    """The smoke benchmark shape (64x64, ngf 8, batch 2), no perceptual loss unless asked."""
    return bench_config("smoke", batch=2, overrides=["generator.ngf=8", "loss.perceptual=none", *overrides])


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """||value - reference|| / ||reference||, in float64 on the CPU."""
    value, reference = value.detach().double().cpu(), reference.detach().double().cpu()
    return float((value - reference).norm() / reference.norm().clamp_min(1e-30))


@contextlib.contextmanager
def one_process_group(backend: str, folder: Path):
    """A world-size-1 process group (file rendezvous in `folder`), destroyed on exit."""
    dist.init_process_group(backend, init_method=f"file://{folder / 'rendezvous'}", rank=0, world_size=1)
    try:
        yield dist.group.WORLD
    finally:
        dist.destroy_process_group()
