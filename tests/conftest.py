"""Shared fixtures: device from SPADE_BENCH_TEST_DEVICE (default cpu), gpu marker, shared data."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import field, make_dataclass
from pathlib import Path

from spade_bench.numerics import PINNED_ENV, UNPINNED_ENV, export_pin  # torch- and numpy-free

# The test process runs the pinned numerics with one thread (train.numerics=pinned): test
# numbers do not depend on the host either. Set before torch and numpy load, since they read
# these variables when they load or first compute; subprocesses of tests inherit them.
export_pin(1)

import pytest  # noqa: E402
import torch  # noqa: E402

from spade_bench import config  # noqa: E402

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
def _pinned_environment():
    """A test that pins another thread count (a CLI command of a config with train.threads=2)
    changes os.environ for its subprocesses; the next test starts from the suite's pin again."""
    saved = {k: os.environ.get(k) for k in (*PINNED_ENV, *UNPINNED_ENV, "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                            "OMP_WAIT_POLICY")}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep caches (FID statistics, mapped weights) out of the user's home during tests."""
    cache = tmp_path_factory.getbasetemp() / "spade-bench-cache"
    monkeypatch.setenv("SPADE_BENCH_CACHE", str(cache))


# ----------------------------------------------------------------------------- config schema changes

# What a later version might add: train.warmup_steps, whose default keeps the old behaviour.
# make_dataclass gives real annotations (this module's are strings, which typing would look up
# in whichever module pytest last registered as "conftest").
_TrainConfigWithNewField = make_dataclass("TrainConfig", [("warmup_steps", int, field(default=0))],
                                          bases=(config.TrainConfig,), frozen=True)
_RunConfigWithNewField = make_dataclass(
    "RunConfig", [("train", _TrainConfigWithNewField, field(default_factory=_TrainConfigWithNewField))],
    bases=(config.RunConfig,), frozen=True)


@pytest.fixture
def add_config_field(monkeypatch):
    """`add()` gives the config schema one more field (train.warmup_steps, default 0), as a later
    version of spade-bench would have it, and returns its key; undone after the test. Runs saved
    before `add()` lack the field."""
    def add() -> str:
        monkeypatch.setattr(config, "TrainConfig", _TrainConfigWithNewField)
        monkeypatch.setattr(config, "RunConfig", _RunConfigWithNewField)
        return "train.warmup_steps"

    return add


def _hash_before_default_rule(saved: dict) -> str:
    flat = {k: v for k, v in config.flatten(saved).items() if k not in config.NON_EXPERIMENT_KEYS}
    return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:16]


@pytest.fixture
def old_config_hash():
    """config_hash as the code up to 6b04d6e computed it, the hash older runs recorded: sha256 of
    every experiment key of a saved config (a dict), default values included."""
    return _hash_before_default_rule
