"""Intervals of each variant's difference to spade: seed spread (t) combined with image resampling.

Two things make a difference between two variants uncertain, and the intervals account for
both:

- **seeds**: GAN training from another seed lands somewhere else. The spread of the
  per-run scores within a variant (sample variance over its seeds) measures it; its
  standard error is s_v^2 / n_v + s_b^2 / n_b for the variant and the baseline.
- **images**: the validation set is one sample of images. Every run is scored on the same
  label maps, so one with-replacement resample of the images is shared by every run
  (paired by image index) and the metric is recomputed on it; the variance over B such
  resamples of (mean over variant seeds - mean over baseline seeds) is the image part.
  Each metric recomputes itself on a resample through its own replicate, declared with it
  in spade_bench/metrics/<name>.py (one generic path here, whatever the metric):
  - mIoU and pixel accuracy from the resampled per-image tp/fp/fn sums (one confusion
    matrix over the dataset, classes with an empty union left out, as torchmetrics'
    MulticlassJaccardIndex does);
  - FID from the resampled generated-image features against the cached real statistics;
  - KID (unbiased MMD^2, cubic polynomial kernel) from the resampled generated-image
    features against all real features; pairs of an image with a copy of itself are left
    out, so a resample stays an unbiased estimate;
  - precision and recall from the resampled features against all real features.
  A run contributes the metrics its metrics.json holds (at the version the report's column
  shows, reports.columns).

The interval is point +- t * sqrt(seed part + image part), centred on the point estimate
(the difference of the seed means on all images), with Welch-Satterthwaite degrees of
freedom from the seed part (the image part counts as known). Centring matters for FID:
a resample with duplicate images has fewer distinct images, so its FID is biased upwards
and a percentile interval sat 1-2 points above the point estimate; here the resamples
give only the spread. With fewer than MIN_SEEDS_FOR_SPREAD seeds on either side there is
no seed spread to measure: the interval is the image part alone (normal quantile),
labelled "image sampling only", and it says nothing about seed-to-seed luck.

Why not resample the seeds as well (a hierarchical percentile bootstrap)? With 3 seeds
that understates the seed spread by (n - 1) / n and uses a normal-like quantile where a t
with about 4 degrees of freedom is due: in the known-truth simulation of
tests/reports/test_bootstrap.py it covered 78-84% at 3 seeds; this interval covers
above 90% there.

FID replicates avoid a 2048x2048 matrix square root each (spade_bench.metrics.fid.FIDReplicator):
another algorithm for the quantity eval.fid.frechet_distance computes (the tests check one
against the other on materialised resamples).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from scipy import stats
from tqdm.auto import tqdm

from reports.collect import RunRecord, load_counts, load_fake_features, load_real_stats
from spade_bench.metrics import Metric, ReplicateInputs, get_metric, list_metrics
# The replicates live with their metrics; re-exported for the tests and callers that used them here.
from spade_bench.metrics._segmentation import miou_and_accuracy  # noqa: F401
from spade_bench.metrics.fid import FIDReplicator  # noqa: F401
from spade_bench.metrics.kid import KIDReplicator, _kernel_sum  # noqa: F401

BASELINE = "spade"
# Seeds per side needed to measure the seed spread at all, and to draw a verdict from it.
MIN_SEEDS_FOR_SPREAD = 2
MIN_SEEDS_FOR_VERDICT = 3
METHOD_SEEDS_AND_IMAGES = "seeds (t) + images"
METHOD_POOLED_SEEDS_AND_IMAGES = "pooled seeds (t) + images"
METHOD_IMAGES_ONLY = "image sampling only"


@dataclass(frozen=True)
class BootstrapSettings:
    """How the intervals are drawn.

    Args:
        replicates: image resamples for each metric (mIoU, pixel accuracy, KID, ...).
        fid_replicates: image resamples for metrics with costly replicates (FID: the first of
            the same draws); each costs one eigendecomposition of a (unique images) square
            matrix, about 50 ms at 500 validation images on one CPU core, so fewer by default
            (200: ~10 s per run).
        seed: RNG seed; the same inputs and seed give the same intervals.
        confidence: two-sided interval level.
    """

    replicates: int = 1000
    fid_replicates: int = 200
    seed: int = 0
    confidence: float = 0.95


@dataclass(frozen=True)
class Interval:
    """A difference (variant - baseline) with its interval.

    Args:
        point: mean over the variant's seeds minus mean over the baseline's, on all images.
        low, high: the interval, centred on `point`.
        replicates: image resamples behind the image part.
        variant_seeds, baseline_seeds: runs on each side.
        method: METHOD_SEEDS_AND_IMAGES, or METHOD_IMAGES_ONLY with fewer than
            MIN_SEEDS_FOR_SPREAD seeds on a side.
        seed_se, image_se: the two standard-error parts (seed_se None when not measured).
        df: degrees of freedom of the t quantile (inf for the normal one).
        confidence: the interval's two-sided level; `p_value` is the matching test of "no
            difference", so p <= 1 - confidence exactly when the interval excludes 0.
    """

    point: float
    low: float
    high: float
    replicates: int
    variant_seeds: int
    baseline_seeds: int
    method: str = METHOD_SEEDS_AND_IMAGES
    seed_se: Optional[float] = None
    image_se: float = 0.0
    df: float = math.inf
    confidence: float = 0.95

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    @property
    def p_value(self) -> float:
        """Two-sided p-value of "no difference": the t (or normal) test this interval inverts,
        with its standard error read back from its half width. NaN when the interval is."""
        half = (self.high - self.low) / 2
        if not (math.isfinite(half) and math.isfinite(self.point)):
            return math.nan
        tail = 1 - (1 - self.confidence) / 2
        quantile = float(stats.t.ppf(tail, self.df)) if math.isfinite(self.df) else float(stats.norm.ppf(tail))
        if half <= 0:
            return 1.0 if self.point == 0 else 0.0
        statistic = abs(self.point) / (half / quantile)
        return float(2 * (stats.t.sf(statistic, self.df) if math.isfinite(self.df) else stats.norm.sf(statistic)))

    @property
    def image_only(self) -> bool:
        return self.method == METHOD_IMAGES_ONLY

    @property
    def min_seeds(self) -> int:
        return min(self.variant_seeds, self.baseline_seeds)

    def to_json(self) -> dict:
        return {"difference": self.point, "ci_low": self.low, "ci_high": self.high,
                "replicates": self.replicates, "variant_seeds": self.variant_seeds,
                "baseline_seeds": self.baseline_seeds, "excludes_zero": self.excludes_zero,
                "method": self.method, "seed_se": self.seed_se, "image_se": self.image_se,
                "df": None if math.isinf(self.df) else self.df, "confidence": self.confidence,
                "p_value": self.p_value}


@dataclass
class BootstrapResult:
    """Intervals per variant and metric, plus what could not be computed and why."""

    intervals: dict[str, dict[str, Interval]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    consistency: list[str] = field(default_factory=list)
    num_images: Optional[int] = None
    settings: BootstrapSettings = field(default_factory=BootstrapSettings)
    # variant -> metric -> [B] mean over the variant's runs of their replicates (every variant,
    # the baseline included), and the runs behind each mean: what summary.json keeps for
    # `spade-bench compare` (reports.compare), which resamples a rerun on the same draws.
    variant_replicates: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    replicate_runs: dict[str, list[str]] = field(default_factory=dict)


# --------------------------------------------------------------------------- resampling

def resample_weights(num_images: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """[replicates, num_images] multiplicities of a with-replacement resample of the images."""
    draws = rng.integers(0, num_images, size=(replicates, num_images))
    offsets = (np.arange(replicates) * num_images)[:, None]
    counts = np.bincount((draws + offsets).ravel(), minlength=replicates * num_images)
    return counts.reshape(replicates, num_images).astype(np.float64)


def replicate_weights(num_images: int, settings: BootstrapSettings) -> tuple[np.ndarray, np.ndarray]:
    """The image resamples of a report: ([replicates, N], the first fid_replicates of them).
    The same settings and image count give the same draws (reports.compare relies on it)."""
    weights = resample_weights(num_images, settings.replicates, np.random.default_rng(settings.seed))
    return weights, weights[:min(settings.fid_replicates, settings.replicates)]


def seed_and_image_interval(variant_reps: np.ndarray, baseline_reps: np.ndarray,
                            variant_points: Sequence[float], baseline_points: Sequence[float],
                            confidence: float = 0.95, *, pooled: bool = False) -> Interval:
    """Interval of mean(variant) - mean(baseline), centred on the point estimate.

    Args:
        variant_reps, baseline_reps: [seeds, B] per-run metric values on B image resamples;
            column b of both used the same resample (a side may pass its seed mean as [1, B]:
            only the mean over seeds enters the image part).
        variant_points, baseline_points: per-run values on all images.
        pooled: both sides are seeds of one experiment (a rerun against its reference,
            reports.compare), so they share one seed variance: it is pooled over both sides
            (n_v + n_b - 2 degrees of freedom), and one side with 2 or more seeds measures it.
            Without it (variants against the baseline) each side needs its own 2 seeds (Welch).
    """
    variant_points = np.asarray(variant_points, dtype=np.float64)
    baseline_points = np.asarray(baseline_points, dtype=np.float64)
    n_v, n_b = len(variant_points), len(baseline_points)
    point = float(variant_points.mean() - baseline_points.mean())
    differences = np.asarray(variant_reps).mean(axis=0) - np.asarray(baseline_reps).mean(axis=0)
    # A resample of a tiny set can hold one distinct image, where KID is undefined (0/0).
    differences = differences[np.isfinite(differences)]
    # Fewer than 2 finite resamples measure no image variance: unknown (NaN, so the interval is
    # not available), never 0, which would shrink the interval to the seed part alone.
    image_var = float(np.var(differences, ddof=1)) if len(differences) > 1 else math.nan
    tail = 1 - (1 - confidence) / 2
    if pooled and max(n_v, n_b) >= MIN_SEEDS_FOR_SPREAD:
        squares = float(((variant_points - variant_points.mean()) ** 2).sum()
                        + ((baseline_points - baseline_points.mean()) ** 2).sum())
        pooled_df = n_v + n_b - 2
        seed_var = squares / pooled_df * (1 / n_v + 1 / n_b)
        total = seed_var + image_var
        df = total ** 2 / (seed_var ** 2 / pooled_df) if seed_var > 0 else math.inf
        quantile = float(stats.t.ppf(tail, df)) if math.isfinite(df) else float(stats.norm.ppf(tail))
        method, seed_se = METHOD_POOLED_SEEDS_AND_IMAGES, math.sqrt(seed_var)
    elif not pooled and min(n_v, n_b) >= MIN_SEEDS_FOR_SPREAD:
        part_v = float(np.var(variant_points, ddof=1)) / n_v
        part_b = float(np.var(baseline_points, ddof=1)) / n_b
        seed_var = part_v + part_b
        denominator = part_v ** 2 / (n_v - 1) + part_b ** 2 / (n_b - 1)
        total = seed_var + image_var
        df = total ** 2 / denominator if denominator > 0 else math.inf
        quantile = float(stats.t.ppf(tail, df)) if math.isfinite(df) else float(stats.norm.ppf(tail))
        method, seed_se = METHOD_SEEDS_AND_IMAGES, math.sqrt(seed_var)
    else:
        total, df, seed_se = image_var, math.inf, None
        quantile, method = float(stats.norm.ppf(tail)), METHOD_IMAGES_ONLY
    half = quantile * math.sqrt(total)
    return Interval(point=point, low=point - half, high=point + half, replicates=len(differences),
                    variant_seeds=n_v, baseline_seeds=n_b, method=method, seed_se=seed_se,
                    image_se=math.sqrt(image_var), df=df, confidence=confidence)


# --------------------------------------------------------------------------- per-run replicates

def bootstrap_metrics() -> list[str]:
    """The registered metrics that declare a per-image replicate, in column order."""
    return [m.name for m in list_metrics() if m.replicator.__func__ is not Metric.replicator.__func__]


def metric_replicates(weights: np.ndarray, fid_weights: np.ndarray, *,
                      counts: Optional[dict[str, np.ndarray]] = None,
                      features: Optional[np.ndarray] = None,
                      real: Optional[dict[str, np.ndarray]] = None,
                      metrics: Optional[Sequence[str]] = None,
                      skipped: Optional[dict[str, str]] = None,
                      ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """One run's metrics on each image resample and on all images: ({metric: [B]}, {metric: value}).

    Args:
        weights, fid_weights: [B, N] and [B_fid, N] image multiplicities (fid_weights for the
            metrics whose replicates are costly).
        counts: per-image tp, fp, fn [N, K], or None.
        features: [N, D] generated-image features, or None.
        real: real statistics: mu, sigma and, when present, features.
        metrics: which metrics (default: every one with a replicate whose inputs are given).
        skipped: filled with metric -> why its replicate could not be built.
    """
    inputs = ReplicateInputs(counts=counts, features=features, real=real)
    reps: dict[str, np.ndarray] = {}
    points: dict[str, float] = {}
    every_image = np.ones((1, weights.shape[1]))
    for name in (bootstrap_metrics() if metrics is None else metrics):
        metric = get_metric(name)
        replicate = metric.replicator(inputs)
        if isinstance(replicate, str):
            if skipped is not None:
                skipped[name] = replicate
            continue
        reps[name] = replicate(fid_weights if metric.costly_replicates else weights)
        points[name] = float(replicate(every_image)[0])
    return reps, points


def differences(variant_runs: Sequence[tuple[dict, dict]], baseline_runs: Sequence[tuple[dict, dict]],
                confidence: float = 0.95) -> dict[str, Interval]:
    """metric -> Interval from each side's metric_replicates outputs (same image resamples)."""
    out = {}
    for metric in bootstrap_metrics():
        have = [r for r in variant_runs if metric in r[0]]
        have_base = [r for r in baseline_runs if metric in r[0]]
        if have and have_base:
            out[metric] = seed_and_image_interval(
                np.stack([r[0][metric] for r in have]), np.stack([r[0][metric] for r in have_base]),
                [r[1][metric] for r in have], [r[1][metric] for r in have_base], confidence)
    return out


def _check(record: RunRecord, metric: str, recomputed: float, out: list[str]) -> None:
    """Flag a run whose metrics.json value is further from the recomputed one than the metric's
    declared slack (KID: also a few subset standard deviations)."""
    reported = record.value(metric)
    if reported is None:
        return
    declared = get_metric(metric)
    slack = declared.consistency_slack(reported, {key: record.value(key) for key in declared.extras})
    if abs(recomputed - reported) > slack:
        out.append(f"{record.label}: {metric} recomputed from the per-image files is "
                   f"{recomputed:.6g}, metrics.json says {reported:.6g} ({record.dir})")


def _listed(names: Sequence[str]) -> str:
    shorts = [get_metric(n).short for n in names]
    return shorts[0] if len(shorts) == 1 else ", ".join(shorts[:-1]) + " and " + shorts[-1]


def _run_replicates(record: RunRecord, weights: np.ndarray, fid_weights: np.ndarray,
                    notes: list[str], consistency: list[str]) -> tuple[dict, dict]:
    """The replicates of the metrics this run holds (its metrics.json values, at the versions
    the report shows), from the per-image files they declare."""
    wanted = [m for m in bootstrap_metrics() if record.value(m) is not None]
    needs = {key for m in wanted for key in get_metric(m).files}
    counts = features = real = None
    if "per_image_counts" in needs:
        counts, why = load_counts(record)
        if counts is None:
            notes.append(why)
    if needs & {"fake_features", "real_stats"}:
        features, why_features = load_fake_features(record)
        real, why_real = load_real_stats(record)
        users = [m for m in wanted if {"fake_features", "real_stats"} & set(get_metric(m).files)]
        if features is None or real is None:
            notes.append(why_features or why_real)
            features = real = None
        elif features.shape[1] != real["mu"].shape[0]:
            notes.append(f"{record.label}: fake features have {features.shape[1]} dims, real "
                         f"statistics {real['mu'].shape[0]}; {'/'.join(get_metric(m).short for m in users)} "
                         f"intervals skipped")
            features = real = None
    skipped: dict[str, str] = {}
    reps, points = metric_replicates(weights, fid_weights, counts=counts, features=features, real=real,
                                     metrics=wanted, skipped=skipped)
    by_reason: dict[str, list[str]] = {}
    for name, why in skipped.items():
        if why.startswith("no "):   # a missing file: noted above
            continue
        by_reason.setdefault(why, []).append(name)
    for why, names in by_reason.items():
        notes.append(f"{record.label}: {why}; {_listed(names)} interval{'s' if len(names) > 1 else ''} skipped")
    for metric, value in points.items():
        _check(record, metric, value, consistency)
    return reps, points


def _num_images(record: RunRecord) -> Optional[int]:
    counts, _ = load_counts(record)
    if counts is not None:
        return counts["tp"].shape[0]
    features, _ = load_fake_features(record)
    return None if features is None else features.shape[0]


def bootstrap_differences(records: Sequence[RunRecord],
                          settings: BootstrapSettings = BootstrapSettings(),
                          baseline: str = BASELINE, progress: bool = True) -> BootstrapResult:
    """Intervals of (variant - baseline) for every metric with a per-image replicate.

    Only evaluated ("ok") runs of one dataset should be passed. Runs whose number of
    validation images differs from the baseline's cannot be paired and are left out, with
    a note saying so.
    """
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

    weights, fid_weights = replicate_weights(num_images, settings)
    by_variant: dict[str, list[tuple[dict, dict]]] = {}
    for record in tqdm(usable, desc="bootstrap", unit="run", disable=not progress):
        by_variant.setdefault(record.variant, []).append(
            _run_replicates(record, weights, fid_weights, result.notes, result.consistency))
        result.replicate_runs.setdefault(record.variant, []).append(record.label)
    for variant, runs in by_variant.items():
        metrics = dict.fromkeys(m for reps, _ in runs for m in reps)
        result.variant_replicates[variant] = {
            m: np.mean([reps[m] for reps, _ in runs if m in reps], axis=0) for m in metrics}
    base = by_variant.pop(baseline)
    for variant, runs in sorted(by_variant.items()):
        result.intervals[variant] = differences(runs, base, settings.confidence)
    return result
