"""Fixtures for the report tests: a cached real-statistics file and a small ablation."""
from __future__ import annotations

from pathlib import Path

import pytest

from fake_runs import make_run, write_real_stats


@pytest.fixture
def real_stats(tmp_path) -> Path:
    return write_real_stats(tmp_path / "cache" / "real_stats.npz")


@pytest.fixture
def ablation_runs(tmp_path, real_stats) -> Path:
    """runs/: spade x3 (best), concat x3 (worse), pix2pixhd x2 (worst) + 1 failed pair."""
    root = tmp_path / "runs"
    for seed in range(3):
        make_run(root, "spade", seed, quality=0.35, real_stats=real_stats)
        make_run(root, "concat", seed, quality=0.15, real_stats=real_stats)
    for seed in range(2):
        make_run(root, "pix2pixhd", seed, quality=0.0, real_stats=real_stats, images_per_s=20.0)
    make_run(root, "pix2pixhd", 2, real_stats=real_stats, status="failed",
             error="TrainingError: non-finite loss at step 100", evaluated=False)
    return root
