"""A known-truth simulation of two variants' runs, for checking interval coverage.

Each repetition draws one validation set and, per variant, `seeds` training runs:

- segmentation: per image and class, `pixels` pixels; a pixel is right with probability
  sigmoid(variant logit + class offset + image difficulty + seed effect + run x image
  noise); a wrong pixel of class k is predicted as class k+1 (a real confusion matrix).
  The image difficulty is shared by every run (the same validation label maps), the seed
  effect by all images of one run: seed-to-seed spread is real, as in GAN training.
- features: each image has a content vector shared by its real photo and every run's
  output; a run adds its variant's mean, a seed offset and per-image noise.

The truth is the expectation of the point estimate of (variant - baseline) over seeds,
validation sets and real sets at this image count, estimated once from many extra draws
(for FID, whose bias depends on the image count, that is the quantity an experiment at
this size can estimate). An interval covers when it contains the truth.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from eval.fid import fid_from_features
from fake_runs import reference_kid


@dataclass(frozen=True)
class Scenario:
    num_images: int = 32
    num_classes: int = 6
    pixels: int = 60
    feature_dim: int = 16
    num_real: int = 32
    shift_logit: float = 0.12      # about +2 mIoU points for the variant
    image_sd: float = 0.5
    seed_sd: float = 0.25
    noise_sd: float = 0.3
    feature_shift: float = 0.25
    feature_seed_sd: float = 0.4
    feature_noise_sd: float = 0.7


@dataclass
class Run:
    counts: dict[str, np.ndarray]      # tp, fp, fn: [N, K]
    features: np.ndarray               # [N, D]


@dataclass
class Draw:
    variant: list[Run]
    baseline: list[Run]
    real_features: np.ndarray          # [M, D]


def _run(s: Scenario, rng: np.random.Generator, variant: bool, difficulty: np.ndarray,
         content: np.ndarray) -> Run:
    classes = np.linspace(-0.5, 0.5, s.num_classes)
    logits = (s.shift_logit * variant + classes[None, :] + difficulty[:, None]
              + rng.normal(0, s.seed_sd) + rng.normal(0, s.noise_sd, size=(s.num_images, 1)))
    tp = rng.binomial(s.pixels, 1 / (1 + np.exp(-logits))).astype(np.float64)
    fn = s.pixels - tp
    counts = {"tp": tp, "fp": np.roll(fn, 1, axis=1), "fn": fn}
    mean = s.feature_shift * variant / np.sqrt(s.feature_dim)
    features = (content + mean + rng.normal(0, s.feature_seed_sd, size=s.feature_dim)
                + rng.normal(0, s.feature_noise_sd, size=content.shape))
    return Run(counts, features)


def draw(s: Scenario, seeds: int, rng: np.random.Generator) -> Draw:
    difficulty = rng.normal(0, s.image_sd, size=s.num_images)
    content = rng.normal(size=(max(s.num_images, s.num_real), s.feature_dim))
    real = content[:s.num_real] + rng.normal(0, 0.5, size=(s.num_real, s.feature_dim))
    content = content[:s.num_images]
    return Draw([_run(s, rng, True, difficulty, content) for _ in range(seeds)],
                [_run(s, rng, False, difficulty, content) for _ in range(seeds)], real)


def point_values(run: Run, real_features: np.ndarray, metrics: tuple[str, ...]) -> dict[str, float]:
    tp, fp, fn = (run.counts[k].sum(0) for k in ("tp", "fp", "fn"))
    union = tp + fp + fn
    out = {"miou": float(100 * np.mean(tp[union > 0] / union[union > 0])),
           "pixel_accuracy": float(100 * tp.sum() / (tp + fn).sum())}
    if "kid" in metrics:
        out["kid"] = reference_kid(run.features, real_features)
    if "fid" in metrics:
        out["fid"] = fid_from_features(run.features, real_features)
    return out


def truth(s: Scenario, draws: int, seed: int = 12345, metrics=("miou", "pixel_accuracy", "kid", "fid")
          ) -> dict[str, float]:
    """E[point(variant) - point(baseline)] from `draws` one-seed draws."""
    rng = np.random.default_rng(seed)
    total = dict.fromkeys(metrics, 0.0)
    for _ in range(draws):
        d = draw(s, 1, rng)
        a = point_values(d.variant[0], d.real_features, metrics)
        b = point_values(d.baseline[0], d.real_features, metrics)
        for m in metrics:
            total[m] += a[m] - b[m]
    return {m: v / draws for m, v in total.items()}


Method = Callable[[Draw, np.random.Generator], dict[str, tuple[float, float, float]]]


def coverage(s: Scenario, method: Method, seeds: int, repetitions: int, true: dict[str, float],
             seed: int = 0) -> dict[str, dict[str, float]]:
    """Per metric: coverage of `true`, and the mean offset of the interval's midpoint from
    its point estimate. `method(draw, rng)` returns metric -> (point, low, high)."""
    rng = np.random.default_rng(seed)
    hits = {m: 0 for m in true}
    offsets = {m: 0.0 for m in true}
    counted = {m: 0 for m in true}
    for _ in range(repetitions):
        result = method(draw(s, seeds, rng), rng)
        for m, (point, low, high) in result.items():
            if m in true:
                hits[m] += low <= true[m] <= high
                offsets[m] += (low + high) / 2 - point
                counted[m] += 1
    return {m: {"coverage": hits[m] / counted[m], "midpoint_minus_point": offsets[m] / counted[m]}
            for m in true if counted[m]}
