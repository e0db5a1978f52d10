"""Every registered metric keeps the contract (parametrised over the registry, so a new metric is
tested for free): a sane declaration, batch-independent update/compute, a sync across ranks that
gives what one process gives, and a per-image replicate that reproduces compute on all images."""
from __future__ import annotations

import re

import numpy as np
import pytest

from spade_bench.config import RunConfig
from spade_bench.metrics import Batch, Context, ReplicateInputs, list_metrics

METRICS = list_metrics()
SETTINGS = RunConfig().eval


def _data(seed: int = 0, n: int = 12, m: int = 15, dim: int = 8, classes: int = 4):
    rng = np.random.default_rng(seed)
    fake = (rng.normal(size=(n, dim)) * 1.2 + 0.3).astype(np.float32)
    real = rng.normal(size=(m, dim)).astype(np.float32)
    counts = {k: rng.integers(0, 30, size=(n, classes)).astype(np.int64) for k in ("tp", "fp", "fn")}
    counts["valid"] = (counts["tp"] + counts["fn"]).sum(1)
    return fake, real, counts


def _batches(metric, fake, counts, splits):
    parts = np.array_split(np.arange(len(fake)), splits)
    if metric.inputs == "features":
        return [Batch(fake_features=fake[p]) for p in parts]
    return [Batch(counts={k: v[p] for k, v in counts.items()}) for p in parts]


def _scored(metric, batches, real):
    instance = metric.from_settings(SETTINGS)
    for batch in batches:
        instance.update(batch)
    return instance, instance.compute(Context(real_features=real))


@pytest.mark.parametrize("metric", METRICS, ids=[m.name for m in METRICS])
def test_declaration(metric):
    assert re.fullmatch(r"[\w.-]+/\d+", metric.version), metric.version
    assert metric.version_string().startswith(metric.version)
    assert metric.direction in ("higher", "lower") and metric.inputs in ("features", "segmentation")
    assert metric.label and metric.latex and metric.short and metric.digits >= 0
    assert metric.min_images >= 1 and all(isinstance(k, str) for k in metric.protocol_keys)
    if metric.reference is not None:
        assert metric.reference.bound in ("ceiling", "floor")


@pytest.mark.parametrize("metric", METRICS, ids=[m.name for m in METRICS])
def test_update_is_batch_independent_and_sync_equals_one_process(metric):
    fake, real, counts = _data()
    _, whole = _scored(metric, _batches(metric, fake, counts, 1), real)
    _, split = _scored(metric, _batches(metric, fake, counts, 3), real)
    assert whole.value is not None and np.isfinite(whole.value)
    assert split.value == whole.value and split.extras == whole.extras
    # Two ranks, each with half the batches: after sync, rank 0 computes what one process does.
    batches = _batches(metric, fake, counts, 4)
    rank0, rank1 = metric.from_settings(SETTINGS), metric.from_settings(SETTINGS)
    for batch in batches[:2]:
        rank0.update(batch)
    for batch in batches[2:]:
        rank1.update(batch)
    other = [getattr(rank1, name) for name in rank1._defaults]
    rank0.sync(lambda state: [state, other.pop(0)])
    synced = rank0.compute(Context(real_features=real))
    assert synced.value == pytest.approx(whole.value, rel=1e-12) and not other


@pytest.mark.parametrize("metric", METRICS, ids=[m.name for m in METRICS])
def test_replicate_on_all_images_reproduces_compute(metric):
    fake, real, counts = _data(seed=1)
    _, score = _scored(metric, _batches(metric, fake, counts, 2), real)
    real64 = real.astype(np.float64)
    inputs = ReplicateInputs(counts={k: v.astype(np.float64) for k, v in counts.items()},
                             features=fake.astype(np.float64),
                             real={"mu": real64.mean(0), "sigma": np.cov(real64, rowvar=False), "features": real64})
    replicate = metric.replicator(inputs)
    if isinstance(replicate, str):
        pytest.skip(f"{metric.name} declares no replicate ({replicate})")
    value = replicate(np.ones((1, len(fake))))[0]
    slack = metric.consistency_slack(score.value, {**score.extras})
    assert abs(value - score.value) <= max(slack, 1e-9 * abs(score.value)), (value, score.value)
    # Weights are multiplicities: a resample gives one finite value per row.
    weights = np.random.default_rng(2).multinomial(len(fake), np.full(len(fake), 1 / len(fake)), size=5)
    assert replicate(weights.astype(np.float64)).shape == (5,)
