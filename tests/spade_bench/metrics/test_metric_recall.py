"""Improved recall (k = 3 nearest neighbours): a hand-worked answer, a loop-by-loop NumPy reference
on random features, and the bootstrap replicate against materialised resamples."""
from __future__ import annotations

import numpy as np
import pytest

from spade_bench.metrics import Batch, Context, ReplicateInputs, get_metric


def reference_recall(fake: np.ndarray, real: np.ndarray, k: int = 3, owner=None) -> float:
    """Kynkaenniemi et al.'s definition, one sample at a time: each generated image's radius is its
    k-th nearest other generated image; a real photo counts when it lies in some image's ball.
    `owner[i]`: which original image copy i is (copies of the same image are not neighbours)."""
    owner = np.arange(len(fake)) if owner is None else np.asarray(owner)
    radii = []
    for i, f in enumerate(fake):
        others = np.linalg.norm(fake - f, axis=1)[owner != owner[i]]
        radii.append(sorted(others)[k - 1] if len(others) >= k else np.nan)
    if np.isnan(radii).any():
        return float("nan")
    inside = [any(np.linalg.norm(r - f) <= radius for f, radius in zip(fake, radii)) for r in real]
    return float(np.mean(inside))


def _recall(fake, real) -> float:
    metric = get_metric("recall")()
    metric.update(Batch(fake_features=np.asarray(fake, np.float32)))
    return metric.compute(Context(real_features=np.asarray(real, np.float32))).value


def test_hand_worked_line():
    # Generated images at 0, 1, 2, 3 and 10: balls cover [-3, 5] and [1, 19] (see the precision
    # test); of the real photos at -3.5, -3, 5, 19 and 20, three are covered.
    fake = np.array([[0.0, 0], [1, 0], [2, 0], [3, 0], [10, 0]])
    real = np.array([[-3.5, 0], [-3, 0], [5, 0], [19, 0], [20, 0]])
    assert _recall(fake, real) == pytest.approx(0.6)


def test_a_collapsed_generator_has_no_recall():
    real = np.random.default_rng(3).normal(size=(20, 8)) * 5
    one_scene = np.random.default_rng(4).normal(size=(15, 8)) * 1e-3      # every output the same scene
    assert _recall(one_scene, real) == 0.0
    assert get_metric("precision").replicator  # the other half of the pair is declared too


@pytest.mark.parametrize("seed", range(4))
def test_equals_the_loop_reference_on_random_features(seed):
    rng = np.random.default_rng(seed)
    fake = (rng.normal(size=(18, 12)) * rng.uniform(0.3, 2.0)).astype(np.float32)
    real = rng.normal(size=(22, 12)).astype(np.float32)
    assert _recall(fake, real) == pytest.approx(reference_recall(fake.astype(float), real.astype(float)))


def test_replicate_equals_materialised_resamples_without_self_copies():
    rng = np.random.default_rng(9)
    fake, real = rng.normal(size=(10, 5)), rng.normal(size=(14, 5))
    replicate = get_metric("recall").replicator(ReplicateInputs(features=fake, real={"features": real}))
    assert replicate(np.ones((1, 10)))[0] == pytest.approx(reference_recall(fake, real))
    weights = rng.multinomial(10, np.full(10, 0.1), size=8).astype(float)
    weights[0] = [10, 0, 0, 0, 0, 0, 0, 0, 0, 0]                   # one distinct image: no neighbours at all
    weights[1] = [7, 3, 0, 0, 0, 0, 0, 0, 0, 0]                    # two: the other's copies are 3 neighbours
    values = replicate(weights)
    assert np.isnan(values[0])
    for w, value in zip(weights[1:], values[1:]):
        owner = np.repeat(np.arange(10), w.astype(int))
        expected = reference_recall(fake[owner], real, owner=owner)
        assert (np.isnan(value) and np.isnan(expected)) or value == pytest.approx(expected)
