"""Bootstrap intervals: the cheap FID/KID replicates against direct formulas, a hand-computed
interval, brute-force enumeration, and the behaviour on separated and identical runs."""
from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pytest
from scipy import linalg

from fake_runs import make_run, reference_kid
from reports.bootstrap import (BootstrapSettings, FIDReplicator, KIDReplicator, bootstrap_differences,
                               fid_from_statistics, miou_and_accuracy, paired_interval,
                               percentile_interval, resample_weights, seed_average)
from reports.collect import collect_runs


def _scipy_fid(features: np.ndarray, mu_real: np.ndarray, sigma_real: np.ndarray) -> float:
    mu, sigma = features.mean(0), np.cov(features, rowvar=False)
    covmean = np.real(linalg.sqrtm(sigma @ sigma_real))
    return float(((mu - mu_real) ** 2).sum() + np.trace(sigma) + np.trace(sigma_real) - 2 * np.trace(covmean))


@pytest.mark.parametrize("num_images", [9, 50])  # fewer and more images than dimensions
def test_fid_eigenvalue_trick_equals_scipy_sqrtm(num_images):
    rng = np.random.default_rng(0)
    dim = 16
    fake = rng.normal(size=(num_images, dim)) * 1.3 + 0.4
    real = rng.normal(size=(70, dim))
    mu_real, sigma_real = real.mean(0), np.cov(real, rowvar=False)
    fid = FIDReplicator(fake, mu_real, sigma_real)
    assert fid(np.ones((1, num_images)))[0] == pytest.approx(_scipy_fid(fake, mu_real, sigma_real), rel=1e-6)
    # A resample with duplicates: the weighted form equals FID of the materialised copies.
    weights = resample_weights(num_images, 3, rng)
    for w, value in zip(weights, fid(weights)):
        copies = np.repeat(fake, w.astype(int), axis=0)
        assert value == pytest.approx(_scipy_fid(copies, mu_real, sigma_real), rel=1e-6)
    assert fid_from_statistics(fake.mean(0), np.cov(fake, rowvar=False), mu_real, sigma_real) == \
        pytest.approx(_scipy_fid(fake, mu_real, sigma_real), rel=1e-9)


def test_kid_replicator_matches_unbiased_mmd_and_drops_self_pairs():
    rng = np.random.default_rng(1)
    fake, real = rng.normal(size=(10, 8)) + 0.5, rng.normal(size=(15, 8))
    kid = KIDReplicator(fake, real)
    assert kid(np.ones((1, 10)))[0] == pytest.approx(reference_kid(fake, real), rel=1e-10)
    # Weighted: pairs of copies of one image are left out of the fake-fake mean.
    w = np.array([3, 0, 1, 2, 0, 0, 1, 1, 2, 0], dtype=float)
    copies = np.repeat(np.arange(10), w.astype(int))
    k = lambda a, b: (a @ b.T / 8 + 1) ** 3  # noqa: E731
    pairs = [(i, j) for i, j in itertools.permutations(range(len(copies)), 2) if copies[i] != copies[j]]
    xx = np.mean([k(fake[copies[i]][None], fake[copies[j]][None])[0, 0] for i, j in pairs])
    kyy = k(real, real)
    yy = (kyy.sum() - np.trace(kyy)) / (15 * 14)
    xy = k(fake[copies], real).mean()
    assert kid(w[None])[0] == pytest.approx(xx + yy - 2 * xy, rel=1e-10)


def test_miou_and_accuracy_weighted_equal_materialised_copies():
    rng = np.random.default_rng(2)
    tp, fp, fn = (rng.integers(0, 20, size=(6, 4)).astype(float) for _ in range(3))
    tp[:, 3] = fp[:, 3] = fn[:, 3] = 0           # a class never present: left out of the mean
    weights = resample_weights(6, 4, rng)
    miou, accuracy = miou_and_accuracy(tp, fp, fn, weights)
    for b, w in enumerate(weights):
        idx = np.repeat(np.arange(6), w.astype(int))
        t, p, n = tp[idx].sum(0), fp[idx].sum(0), fn[idx].sum(0)
        union = t + p + n
        assert miou[b] == pytest.approx(100 * np.mean(t[union > 0] / union[union > 0]))
        assert accuracy[b] == pytest.approx(100 * t.sum() / (t + n).sum())


def test_resample_weights_are_multiplicities_and_seeded():
    a = resample_weights(7, 50, np.random.default_rng(3))
    b = resample_weights(7, 50, np.random.default_rng(3))
    assert np.array_equal(a, b)
    assert (a.sum(axis=1) == 7).all() and (a >= 0).all()


def _all_resamples(num_images: int) -> np.ndarray:
    """Every ordered with-replacement resample, as multiplicities (the exact bootstrap)."""
    rows = []
    for draw in itertools.product(range(num_images), repeat=num_images):
        rows.append(np.bincount(draw, minlength=num_images))
    return np.array(rows, dtype=float)


def test_interval_by_hand_one_seed_three_images():
    # One class, 100 pixels per image. spade gets 50 right on each image; the variant gets
    # 50, 50 and 53. A resample holding image 2 k times gives accuracy 50 + k for the
    # variant, so the difference is k ~ Binomial(3, 1/3): 0 (8 of 27), 1 (12), 2 (6), 3 (1).
    # Percentile interval (linear) over the 27 sorted values: 2.5% at position 0.65 -> 0;
    # 97.5% at 25.35 -> 2 + 0.35 * (3 - 2) = 2.35.
    def counts(correct):
        tp = np.array(correct, dtype=float)[:, None]
        return tp, np.zeros_like(tp), 100 - tp

    weights = _all_resamples(3)
    _, base = miou_and_accuracy(*counts([50, 50, 50]), weights)
    _, variant = miou_and_accuracy(*counts([50, 50, 53]), weights)
    one_seed = np.zeros((27, 1), dtype=int)
    interval = paired_interval(variant[None], base[None], one_seed, one_seed, [51.0], [50.0])
    assert (interval.low, interval.high) == pytest.approx((0.0, 2.35))
    assert interval.point == pytest.approx(1.0)
    assert not interval.excludes_zero


def test_interval_equals_brute_force_enumeration_for_miou():
    rng = np.random.default_rng(4)
    tp_a, fp_a, fn_a = (rng.integers(0, 30, size=(4, 3)).astype(float) for _ in range(3))
    tp_b, fp_b, fn_b = tp_a + rng.integers(0, 8, size=(4, 3)), fp_a, fn_a
    weights = _all_resamples(4)  # 256 resamples
    a, _ = miou_and_accuracy(tp_a, fp_a, fn_a, weights)
    b, _ = miou_and_accuracy(tp_b, fp_b, fn_b, weights)
    draws = np.zeros((len(weights), 1), dtype=int)
    interval = paired_interval(b[None], a[None], draws, draws, [0.0], [0.0])

    def miou(tp, fp, fn, idx):
        t, p, n = tp[list(idx)].sum(0), fp[list(idx)].sum(0), fn[list(idx)].sum(0)
        u = t + p + n
        return 100 * np.mean(t[u > 0] / u[u > 0])

    brute = [miou(tp_b, fp_b, fn_b, idx) - miou(tp_a, fp_a, fn_a, idx)
             for idx in itertools.product(range(4), repeat=4)]
    assert (interval.low, interval.high) == pytest.approx(tuple(np.percentile(brute, [2.5, 97.5])))


def test_seed_resampling_by_hand():
    # No image noise: the variant's seeds score 0 and 2, spade's one seed 0. The difference
    # is the mean of two seed draws from {0, 2}: 0 (1/4), 1 (1/2), 2 (1/4).
    replicates = 4000
    variant = np.array([[0.0] * replicates, [2.0] * replicates])
    base = np.zeros((1, replicates))
    draws = np.random.default_rng(5).integers(0, 2, size=(replicates, 2))
    differences = seed_average(variant, draws) - seed_average(base, np.zeros((replicates, 1), int))
    assert set(np.unique(differences)) == {0.0, 1.0, 2.0}
    assert np.mean(differences == 1.0) == pytest.approx(0.5, abs=0.03)
    assert percentile_interval(differences) == (0.0, 2.0)


@pytest.fixture
def paired_runs(tmp_path, real_stats):
    """spade x3; concat x3 clearly worse; spade-gamma x3 identical copies of spade's outputs."""
    root = tmp_path / "runs"
    for seed in range(3):
        spade = make_run(root, "spade", seed, quality=0.35, real_stats=real_stats)
        make_run(root, "concat", seed, quality=0.05, real_stats=real_stats)
        counts = dict(np.load(spade / "eval" / "per_image_counts.npz"))
        features = np.load(spade / "eval" / "fake_features.npy")
        make_run(root, "spade-gamma", seed, real_stats=real_stats, counts=counts, features=features)
    return root


def test_separated_pair_excludes_zero_and_identical_runs_contain_zero(paired_runs):
    records = collect_runs([paired_runs])
    result = bootstrap_differences(records, BootstrapSettings(replicates=300, fid_replicates=60),
                                   progress=False)
    assert result.num_images == 12 and not result.notes and not result.consistency
    worse = result.intervals["concat"]
    assert worse["miou"].high < 0 and worse["pixel_accuracy"].high < 0
    assert worse["fid"].low > 0 and worse["kid"].low > 0
    assert worse["fid"].replicates == 60 and worse["miou"].replicates == 300
    same = result.intervals["spade-gamma"]
    for metric in ("miou", "pixel_accuracy", "fid", "kid"):
        assert same[metric].low <= 0 <= same[metric].high, metric
        assert same[metric].point == pytest.approx(0.0, abs=1e-9)
    # The point estimate is the recomputed full-set value, which matches metrics.json.
    concat_fid = np.mean([r.value("fid") for r in records if r.variant == "concat"])
    spade_fid = np.mean([r.value("fid") for r in records if r.variant == "spade"])
    assert worse["fid"].point == pytest.approx(concat_fid - spade_fid, rel=1e-6)
    again = bootstrap_differences(records, BootstrapSettings(replicates=300, fid_replicates=60),
                                  progress=False)
    assert again.intervals["concat"]["miou"] == worse["miou"]


def test_unpaired_runs_and_wrong_metrics_are_reported(tmp_path, real_stats):
    root = tmp_path / "runs"
    make_run(root, "spade", 0, quality=0.3, real_stats=real_stats)
    make_run(root, "concat", 0, quality=0.2, real_stats=real_stats, num_images=8)
    lying = make_run(root, "spade-k1", 0, quality=0.2, real_stats=real_stats)
    metrics = json.loads((lying / "eval" / "metrics.json").read_text())
    metrics["metrics"]["miou"] += 5.0
    (lying / "eval" / "metrics.json").write_text(json.dumps(metrics))
    shutil.rmtree(tmp_path / "cache")          # the real statistics moved away
    result = bootstrap_differences(collect_runs([root]), BootstrapSettings(replicates=50),
                                   progress=False)
    assert any("concat/seed0: 8 validation images" in n for n in result.notes)
    assert "concat" not in result.intervals
    assert any("real statistics" in n for n in result.notes)
    assert set(result.intervals["spade-k1"]) == {"miou", "pixel_accuracy"}
    assert any("spade-k1/seed0: miou recomputed" in c for c in result.consistency)
