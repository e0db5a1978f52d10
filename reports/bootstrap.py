"""Hierarchical paired bootstrap: 95% confidence intervals of each variant's difference to spade.

Each replicate resamples the seeds of each variant (with replacement), and the validation
images (with replacement). All runs are evaluated on the same validation label maps, so
one image resample is shared by every run in a replicate: the comparison is paired by
image index, and the luck of which images make up the validation set is common to both
sides of a difference, as it is in reality. A variant's value in a replicate is the mean
over its resampled seeds of the metric recomputed on the resampled images:

- mIoU and pixel accuracy from the resampled per-image tp/fp/fn sums (one confusion
  matrix over the dataset, classes with an empty union left out, as torchmetrics'
  MulticlassJaccardIndex does);
- FID from the resampled generated-image features against the cached real statistics;
- KID (unbiased MMD^2, cubic polynomial kernel) from the resampled generated-image
  features against all real features; pairs of an image with a copy of itself are left
  out, so a resample stays an unbiased estimate.

FID replicates avoid a 2048x2048 matrix square root each: with the weighted, centred
features A = diag(sqrt w) (X - mu_w), tr sqrt(S_fake S_real) is the sum of the square roots
of the eigenvalues of A S_real A^T / (n - 1), an (unique images) x (unique images)
symmetric PSD matrix built from the Gram matrix X S_real X^T computed once per run.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from scipy import linalg

from reports.collect import RunRecord, load_counts, load_fake_features, load_real_stats

BASELINE = "spade"
BOOTSTRAP_METRICS = ("miou", "pixel_accuracy", "fid", "kid")


@dataclass(frozen=True)
class BootstrapSettings:
    """How the intervals are drawn.

    Args:
        replicates: replicates for mIoU, pixel accuracy and KID.
        fid_replicates: replicates for FID (the first of the same draws); each costs one
            eigendecomposition of a (unique images) square matrix, about 50 ms at 500
            validation images on one CPU core, so fewer by default (200: ~10 s per run).
        seed: RNG seed; the same inputs and seed give the same intervals.
        confidence: two-sided percentile interval level.
    """

    replicates: int = 1000
    fid_replicates: int = 200
    seed: int = 0
    confidence: float = 0.95


@dataclass(frozen=True)
class Interval:
    """A difference (variant - baseline) with its percentile bootstrap interval."""

    point: float
    low: float
    high: float
    replicates: int
    variant_seeds: int
    baseline_seeds: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def to_json(self) -> dict:
        return {"difference": self.point, "ci_low": self.low, "ci_high": self.high,
                "replicates": self.replicates, "variant_seeds": self.variant_seeds,
                "baseline_seeds": self.baseline_seeds, "excludes_zero": self.excludes_zero}


@dataclass
class BootstrapResult:
    """Intervals per variant and metric, plus what could not be computed and why."""

    intervals: dict[str, dict[str, Interval]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    consistency: list[str] = field(default_factory=list)
    num_images: Optional[int] = None
    settings: BootstrapSettings = field(default_factory=BootstrapSettings)


# --------------------------------------------------------------------------- resampling

def resample_weights(num_images: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """[replicates, num_images] multiplicities of a with-replacement resample of the images."""
    draws = rng.integers(0, num_images, size=(replicates, num_images))
    offsets = (np.arange(replicates) * num_images)[:, None]
    counts = np.bincount((draws + offsets).ravel(), minlength=replicates * num_images)
    return counts.reshape(replicates, num_images).astype(np.float64)


def seed_draws(num_seeds: int, replicates: int, seed: int, variant: str) -> np.ndarray:
    """[replicates, num_seeds] seed indices; keyed by variant so adding one changes no other."""
    rng = np.random.default_rng([seed, zlib.crc32(variant.encode())])
    return rng.integers(0, num_seeds, size=(replicates, num_seeds))


def percentile_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided percentile interval (numpy's default linear interpolation)."""
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def seed_average(per_run: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Mean over the drawn seeds: per_run [seeds, B], draws [B, seeds] -> [B]."""
    replicates = per_run.shape[1]
    return per_run[draws, np.arange(replicates)[:, None]].mean(axis=1)


def paired_interval(variant_reps: np.ndarray, baseline_reps: np.ndarray,
                    variant_draws: np.ndarray, baseline_draws: np.ndarray,
                    variant_points: Sequence[float], baseline_points: Sequence[float],
                    confidence: float = 0.95) -> Interval:
    """Interval of mean(variant) - mean(baseline) from per-run replicates on shared image draws.

    Args:
        variant_reps, baseline_reps: [seeds, B] per-run metric replicates; column b of both
            used the same image resample.
        variant_draws, baseline_draws: [B, seeds] resampled seed indices.
        variant_points, baseline_points: per-run values on all images (the point estimate).
    """
    differences = (seed_average(variant_reps, variant_draws)
                   - seed_average(baseline_reps, baseline_draws))
    low, high = percentile_interval(differences, confidence)
    point = float(np.mean(variant_points) - np.mean(baseline_points))
    return Interval(point=point, low=low, high=high, replicates=len(differences),
                    variant_seeds=len(variant_points), baseline_seeds=len(baseline_points))


# --------------------------------------------------------------------------- metrics on weights

def miou_and_accuracy(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray,
                      weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """mIoU and pixel accuracy (percent) of weighted image sets: weights [B, N] -> ([B], [B]).

    IoU_k = TP_k / (TP_k + FP_k + FN_k) over the whole (resampled) set; classes with an empty
    union are left out of the mean. Accuracy = sum TP / sum (TP + FN), i.e. correct over
    scored pixels.
    """
    tp_sum, fp_sum, fn_sum = weights @ tp, weights @ fp, weights @ fn
    union = tp_sum + fp_sum + fn_sum
    present = union > 0
    iou = np.divide(tp_sum, union, out=np.zeros_like(tp_sum), where=present)
    classes = present.sum(axis=1)
    miou = np.divide(iou.sum(axis=1), classes, out=np.full(len(weights), np.nan), where=classes > 0)
    labelled = (tp_sum + fn_sum).sum(axis=1)
    accuracy = np.divide(tp_sum.sum(axis=1), labelled, out=np.full(len(weights), np.nan),
                         where=labelled > 0)
    return 100 * miou, 100 * accuracy


def fid_from_statistics(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                        sigma2: np.ndarray) -> float:
    """Reference FID with scipy's sqrtm (pytorch-fid's formula); slow, for checks."""
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


class FIDReplicator:
    """FID of weighted resamples of one run's features against fixed real statistics.

    Args:
        features: [N, D] generated-image features.
        mu_real, sigma_real: the cached real statistics ([D], [D, D]).
    """

    def __init__(self, features: np.ndarray, mu_real: np.ndarray, sigma_real: np.ndarray):
        features = np.asarray(features, dtype=np.float64)
        self.gram = features @ features.T
        self.gram_real = (features @ sigma_real) @ features.T
        self.projection_real = features @ mu_real
        self.mu_real_sq = float(mu_real @ mu_real)
        self.trace_real = float(np.trace(sigma_real))

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        return np.array([self._one(w) for w in np.atleast_2d(weights)])

    def _one(self, weights: np.ndarray) -> float:
        keep = weights > 0
        w = weights[keep]
        n = w.sum()
        gram = self.gram[np.ix_(keep, keep)]
        gram_real = self.gram_real[np.ix_(keep, keep)]
        gram_w = gram @ w
        mu_sq = (w @ gram_w) / n ** 2                                  # |mu_fake|^2
        mean_term = mu_sq - 2 * (self.projection_real[keep] @ w) / n + self.mu_real_sq
        trace_fake = (w @ np.diag(gram) - n * mu_sq) / (n - 1)
        # Centre the real-weighted Gram: (X - 1 mu^T) S (X - 1 mu^T)^T, mu = X^T w / n.
        g = gram_real @ w / n
        centred = gram_real - g[:, None] - g[None, :] + (w @ g) / n
        root_w = np.sqrt(w)
        eigenvalues = np.linalg.eigvalsh(root_w[:, None] * centred * root_w[None, :] / (n - 1))
        trace_sqrt = np.sqrt(np.clip(eigenvalues, 0, None)).sum()
        return float(mean_term + trace_fake + self.trace_real - 2 * trace_sqrt)


def _kernel_sum(a: np.ndarray, b: np.ndarray, dim: int, chunk: int = 1024) -> np.ndarray:
    """Row sums of the cubic polynomial kernel (a b^T / dim + 1)^3, in chunks of b."""
    out = np.zeros(len(a))
    for start in range(0, len(b), chunk):
        out += ((a @ b[start:start + chunk].T / dim + 1) ** 3).sum(axis=1)
    return out


class KIDReplicator:
    """Unbiased KID (MMD^2, kernel (x.y/D + 1)^3) of weighted resamples against fixed real features.

    Args:
        features: [N, D] generated-image features.
        real_features: [M, D] real-image features.
    """

    def __init__(self, features: np.ndarray, real_features: np.ndarray):
        x = np.asarray(features, dtype=np.float64)
        y = np.asarray(real_features, dtype=np.float64)
        dim, m = x.shape[1], len(y)
        self.kernel = (x @ x.T / dim + 1) ** 3
        self.kernel_diag = np.diag(self.kernel).copy()
        real_sum = _kernel_sum(y, y, dim).sum()
        real_diag = ((np.einsum("ij,ij->i", y, y) / dim + 1) ** 3).sum()
        self.real_term = (real_sum - real_diag) / (m * (m - 1))
        self.cross_mean = _kernel_sum(x, y, dim) / m

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        weights = np.atleast_2d(weights)
        n = weights.sum(axis=1)
        quadratic = np.einsum("bi,bi->b", weights @ self.kernel, weights)
        squared = weights ** 2
        fake_term = (quadratic - squared @ self.kernel_diag) / (n ** 2 - squared.sum(axis=1))
        return fake_term + self.real_term - 2 * (weights @ self.cross_mean) / n


# --------------------------------------------------------------------------- per-run replicates

@dataclass
class _RunReplicates:
    record: RunRecord
    reps: dict[str, np.ndarray] = field(default_factory=dict)    # metric -> [B]
    points: dict[str, float] = field(default_factory=dict)        # metric -> value on all images


# Recomputed full-set values must match metrics.json within these (absolute, relative)
# tolerances, else the report says so: KID is looser because the evaluator averages
# random subsets.
_TOLERANCE = {"miou": (0.05, 0.0), "pixel_accuracy": (0.05, 0.0), "fid": (0.05, 0.01),
              "kid": (0.0, 0.5)}


def _check(record: RunRecord, metric: str, recomputed: float, out: list[str]) -> None:
    reported = record.value(metric)
    if reported is None:
        return
    absolute, relative = _TOLERANCE[metric]
    slack = absolute + relative * abs(reported)
    if metric == "kid":
        slack = max(slack, 5 * (record.value("kid_std") or 0.0))
    if abs(recomputed - reported) > slack:
        out.append(f"{record.label}: {metric} recomputed from the per-image files is "
                   f"{recomputed:.6g}, metrics.json says {reported:.6g} ({record.dir})")


def _run_replicates(record: RunRecord, weights: np.ndarray, fid_weights: np.ndarray,
                    notes: list[str], consistency: list[str]) -> _RunReplicates:
    out = _RunReplicates(record)
    every_image = np.ones((1, weights.shape[1]))
    counts, why = load_counts(record)
    if counts is None:
        notes.append(why)
    else:
        out.reps["miou"], out.reps["pixel_accuracy"] = miou_and_accuracy(
            counts["tp"], counts["fp"], counts["fn"], weights)
        miou, accuracy = miou_and_accuracy(counts["tp"], counts["fp"], counts["fn"], every_image)
        out.points["miou"], out.points["pixel_accuracy"] = float(miou[0]), float(accuracy[0])
    _feature_replicates(record, weights, fid_weights, out, notes)
    for metric, value in out.points.items():
        _check(record, metric, value, consistency)
    return out


def _feature_replicates(record: RunRecord, weights: np.ndarray, fid_weights: np.ndarray,
                        out: _RunReplicates, notes: list[str]) -> None:
    every_image = np.ones((1, weights.shape[1]))
    features, why = load_fake_features(record)
    real, why_real = load_real_stats(record)
    if features is None or real is None:
        notes.append(why or why_real)
        return
    if features.shape[1] != real["mu"].shape[0]:
        notes.append(f"{record.label}: fake features have {features.shape[1]} dims, real "
                     f"statistics {real['mu'].shape[0]}; FID/KID intervals skipped")
        return
    fid = FIDReplicator(features, real["mu"], real["sigma"])
    out.reps["fid"] = fid(fid_weights)
    out.points["fid"] = float(fid(every_image)[0])
    if "features" in real:
        kid = KIDReplicator(features, real["features"])
        out.reps["kid"] = kid(weights)
        out.points["kid"] = float(kid(every_image)[0])
    else:
        notes.append(f"{record.label}: real statistics hold no 'features'; KID interval skipped")


def _num_images(record: RunRecord) -> Optional[int]:
    counts, _ = load_counts(record)
    if counts is not None:
        return counts["tp"].shape[0]
    features, _ = load_fake_features(record)
    return None if features is None else features.shape[0]


def bootstrap_differences(records: Sequence[RunRecord],
                          settings: BootstrapSettings = BootstrapSettings(),
                          baseline: str = BASELINE, progress: bool = True) -> BootstrapResult:
    """Intervals of (variant - baseline) for mIoU, pixel accuracy, FID and KID.

    Only evaluated ("ok") runs of one dataset should be passed. Runs whose number of
    validation images differs from the baseline's cannot be paired and are left out, with
    a note saying so.
    """
    from tqdm.auto import tqdm

    result = BootstrapResult(settings=settings)
    ok = [r for r in records if r.ok]
    base_runs = [r for r in ok if r.variant == baseline]
    if not base_runs:
        result.notes.append(f"no evaluated {baseline!r} runs, so no differences to {baseline}")
        return result
    sizes = {r.label: _num_images(r) for r in ok}
    base_sizes = {sizes[r.label] for r in base_runs if sizes[r.label] is not None}
    if not base_sizes:
        result.notes.append(f"no {baseline!r} run has per-image files; no intervals")
        return result
    num_images = max(base_sizes)
    usable = []
    for r in ok:
        if sizes[r.label] == num_images:
            usable.append(r)
        else:
            result.notes.append(
                f"{r.label}: {sizes[r.label]} validation images, {baseline} has {num_images}; "
                f"not paired, left out of the intervals ({r.dir})")
    result.num_images = num_images

    rng = np.random.default_rng(settings.seed)
    weights = resample_weights(num_images, settings.replicates, rng)
    fid_weights = weights[:min(settings.fid_replicates, settings.replicates)]
    per_run = [_run_replicates(r, weights, fid_weights, result.notes, result.consistency)
               for r in tqdm(usable, desc="bootstrap", unit="run", disable=not progress)]

    by_variant: dict[str, list[_RunReplicates]] = {}
    for run in per_run:
        by_variant.setdefault(run.record.variant, []).append(run)
    base = by_variant.pop(baseline)
    for variant, runs in sorted(by_variant.items()):
        result.intervals[variant] = {}
        for metric in BOOTSTRAP_METRICS:
            have = [r for r in runs if metric in r.reps]
            have_base = [r for r in base if metric in r.reps]
            if not have or not have_base:
                continue
            replicates = len(have[0].reps[metric])
            result.intervals[variant][metric] = paired_interval(
                np.stack([r.reps[metric] for r in have]),
                np.stack([r.reps[metric] for r in have_base]),
                seed_draws(len(have), replicates, settings.seed, variant),
                seed_draws(len(have_base), replicates, settings.seed, baseline),
                [r.points[metric] for r in have], [r.points[metric] for r in have_base],
                settings.confidence)
    return result
