"""Improved precision (k = 3 nearest neighbours): a hand-worked answer, a loop-by-loop NumPy reference
on random features, and the bootstrap replicate."""
from __future__ import annotations

import numpy as np
import pytest

from spade_bench.metrics import Batch, Context, ReplicateInputs, get_metric
from spade_bench.metrics.precision import NEIGHBOURS, inside_manifold, knn_radii


def reference_precision(fake: np.ndarray, real: np.ndarray, k: int = 3) -> float:
    """Kynkaenniemi et al.'s definition, one sample at a time: the k-th nearest other real photo
    sets each real photo's radius; a generated image counts when some real photo is within it."""
    radii = [sorted(np.linalg.norm(real - r, axis=1)[np.arange(len(real)) != i])[k - 1] for i, r in enumerate(real)]
    inside = [any(np.linalg.norm(f - r) <= radius for r, radius in zip(real, radii)) for f in fake]
    return float(np.mean(inside))


def _precision(fake, real) -> float:
    metric = get_metric("precision")()
    metric.update(Batch(fake_features=np.asarray(fake, np.float32)))
    return metric.compute(Context(real_features=np.asarray(real, np.float32))).value


def test_hand_worked_line():
    # Real photos at 0, 1, 2, 3 and 10 on a line: 3rd-neighbour radii 3, 2, 2, 3 and 9, so the
    # balls cover [-3, 5] and [1, 19]; -3 and 19 sit exactly on a boundary (<= counts).
    real = np.array([[0.0, 0], [1, 0], [2, 0], [3, 0], [10, 0]])
    assert np.sqrt(knn_radii(real)).tolist() == [3, 2, 2, 3, 9]
    fake = np.array([[-3.5, 0], [-3, 0], [5, 0], [19, 0], [20, 0]])
    assert inside_manifold(fake, real).tolist() == [False, True, True, True, False]
    assert _precision(fake, real) == pytest.approx(0.6)
    assert NEIGHBOURS == 3


@pytest.mark.parametrize("seed", range(4))
def test_equals_the_loop_reference_on_random_features(seed):
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(25, 16)).astype(np.float32)
    fake = (rng.normal(size=(20, 16)) * rng.uniform(0.5, 2.0) + rng.uniform(0, 1.5)).astype(np.float32)
    assert _precision(fake, real) == pytest.approx(reference_precision(fake.astype(float), real.astype(float)))


def test_copies_of_the_real_photos_are_all_inside_and_far_images_none():
    real = np.random.default_rng(5).normal(size=(30, 8))
    assert _precision(real[:10], real) == 1.0
    assert _precision(real[:10] + 100.0, real) == 0.0


def test_too_few_images_give_no_value_and_say_why():
    metric = get_metric("precision")()
    metric.update(Batch(fake_features=np.zeros((3, 4), np.float32)))
    score = metric.compute(Context(real_features=np.zeros((10, 4), np.float32)))
    assert score.value is None and "more than k=3 images" in score.warnings[0]


def test_replicate_is_the_weighted_share_inside():
    rng = np.random.default_rng(7)
    real, fake = rng.normal(size=(20, 6)), rng.normal(size=(12, 6)) * 1.5
    replicate = get_metric("precision").replicator(ReplicateInputs(features=fake, real={"features": real}))
    weights = rng.multinomial(12, np.full(12, 1 / 12), size=6).astype(float)
    for w, value in zip(weights, replicate(weights)):
        copies = np.repeat(fake, w.astype(int), axis=0)          # the real balls do not move
        assert value == pytest.approx(reference_precision(copies, real))
