"""Where evaluation caches live (mapped Inception weights, real-image statistics, evaluators),
and the hashes that key them or name what was loaded.

The cache folder is `$SPADE_BENCH_CACHE`, or `~/.cache/spade-bench` when that is unset.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Mapping, Optional

import torch

from spade_bench.checkpoint import tensor_bytes
from spade_bench.io import sha256_file  # noqa: F401 - re-exported: eval imports it from here


def cache_dir() -> Path:
    """The cache root; created on first use."""
    root = os.environ.get("SPADE_BENCH_CACHE") or str(Path.home() / ".cache" / "spade-bench")
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def state_dict_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Canonical hex sha256 of a network's weights: for each tensor, in sorted key order, its
    name, dtype, shape and raw bytes (contiguous, on the CPU).

    A file hash changes with whatever else a checkpoint stores (timings, the device) and with
    the serialiser; this one depends only on the weights, so the same training gives the same
    hash.
    """
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key]
        digest.update(f"{key}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(tensor_bytes(tensor))
    return digest.hexdigest()


def short_hash(text: str, length: int = 8) -> str:
    """First `length` hex digits of sha256(text): a readable cache-key component."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def root_hash(root: Optional[str]) -> str:
    """Key for a dataset folder: hash of its absolute path ("none" for procedural data)."""
    if not root:
        return "none"
    return short_hash(str(Path(root).expanduser().resolve()))
