"""Where evaluation caches live (mapped Inception weights, real-image statistics, evaluators),
and the hashes that key them.

The cache folder is `$SPADE_BENCH_CACHE`, or `~/.cache/spade-bench` when that is unset.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional


def cache_dir() -> Path:
    """The cache root; created on first use."""
    root = os.environ.get("SPADE_BENCH_CACHE") or str(Path.home() / ".cache" / "spade-bench")
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Full hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def short_hash(text: str, length: int = 8) -> str:
    """First `length` hex digits of sha256(text): a readable cache-key component."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def root_hash(root: Optional[str]) -> str:
    """Key for a dataset folder: hash of its absolute path ("none" for procedural data)."""
    if not root:
        return "none"
    return short_hash(str(Path(root).expanduser().resolve()))
