"""Shared fixtures: device from SPADE_BENCH_TEST_DEVICE (default cpu), gpu marker, shared data."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        # The marker itself, not `"gpu" in item.keywords`: keywords also hold the names of
        # parent folders, so every test under tests/gpu/ (CPU twins too) would be skipped.
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def device() -> torch.device:
    return torch.device(os.environ.get("SPADE_BENCH_TEST_DEVICE", "cpu"))


@pytest.fixture(scope="session")
def facades_root() -> Path:
    root = SHARED_DATASETS / "cmp_facades"
    if not (root / "base").is_dir():
        pytest.skip(f"shared CMP Facades not found at {root}")
    return root


@pytest.fixture(scope="session")
def coco_root() -> Path:
    root = SHARED_DATASETS / "coco_stuff_sample"
    if not (root / "train_img").is_dir():
        pytest.skip(f"shared COCO-Stuff sample not found at {root}")
    return root


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread: the networks in tests are tiny, and on a busy 2-core machine
    OpenMP threads that wait for each other make them several times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep caches (FID statistics, mapped weights) out of the user's home during tests."""
    cache = tmp_path_factory.getbasetemp() / "spade-bench-cache"
    monkeypatch.setenv("SPADE_BENCH_CACHE", str(cache))
