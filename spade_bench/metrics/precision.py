"""Improved precision (Kynkaenniemi et al. 2019): the share of generated images that fall inside
the real photos' manifold, estimated with k-nearest-neighbour balls; a measure of fidelity that
FID folds together with diversity (recall.py measures the other half).

Each real photo's ball has the radius of its k-th nearest other real photo (k = 3, the
paper's choice); a generated image is inside the manifold when it lies in at least one ball
(distance <= radius, as the authors' code compares). Distances are Euclidean on the same
FID-Inception pool3 features FID and KID use, so the metric costs no network and no
download; the authors used VGG-16 fc2 features, so values compare within spade-bench, not
with numbers published on VGG features. Reported as a fraction in [0, 1]. With k or fewer
images in a set there are no balls: the value is null with a warning (the other metrics are
still scored).

For the bootstrap the real balls stay fixed (the real set is not resampled, as for FID and
KID), so a resample's precision is the weighted share of generated images inside.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from spade_bench.metrics import register_metric
from spade_bench.metrics._base import Context, ReplicateInputs, Replicator, Score
from spade_bench.metrics._features import FeatureMetric

PRECISION_RECALL_FAMILY = "spade-bench-knn-precision-recall"
NEIGHBOURS = 3


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N, M] squared Euclidean distances (float64; clipped at 0 against rounding)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    out = (a * a).sum(axis=1)[:, None] - 2 * (a @ b.T) + (b * b).sum(axis=1)[None, :]
    return np.maximum(out, 0.0)


def knn_radii(features: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """Squared distance of each sample to its k-th nearest other sample ([N]; needs N > k)."""
    d = squared_distances(features, features)
    np.fill_diagonal(d, np.inf)
    return np.partition(d, k - 1, axis=1)[:, k - 1]


def inside_manifold(probes: np.ndarray, manifold: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """bool [P]: each probe lies in at least one k-NN ball of the manifold's samples."""
    radii = knn_radii(manifold, k)
    return (squared_distances(probes, manifold) <= radii[None, :]).any(axis=1)


def too_few(metric: str, num_fake: int, num_real: int, k: int = NEIGHBOURS) -> Optional[str]:
    """The warning when a set is too small for k-NN balls, else None."""
    if min(num_fake, num_real) > k:
        return None
    return (f"{metric} needs more than k={k} images in each set (k-nearest-neighbour balls), got {num_fake} "
            f"generated and {num_real} real; not computed (raise eval.num_images)")


@register_metric
class Precision(FeatureMetric):
    name = "precision"
    version = f"{PRECISION_RECALL_FAMILY}/1"
    direction = "higher"
    label, latex, digits, short = "precision", "precision", 3, "precision"
    order = 50
    tolerance = (1e-9, 0.0)

    @classmethod
    def describe(cls) -> str:
        return (f"improved precision, Kynkaenniemi et al. 2019: share of generated images within the k={NEIGHBOURS} "
                f"nearest-neighbour ball (distance <= radius) of some real photo, Euclidean on the FID-Inception "
                f"pool3 features (the authors used VGG-16 fc2)")

    def compute(self, context: Context = Context()) -> Score:
        fake, real = self.fake_features(), context.real_features
        if real is None:
            return Score(None, warnings=["precision needs the real photos' features; none were given"])
        warning = too_few("precision", len(fake), len(real))
        if warning:
            return Score(None, warnings=[warning])
        return Score(float(inside_manifold(fake, real).mean()))

    @classmethod
    def replicator(cls, inputs: ReplicateInputs) -> Replicator | str:
        if inputs.features is None or inputs.real is None:
            return "no generated-image features or real statistics"
        if "features" not in inputs.real:
            return "real statistics hold no 'features'"
        fake, real = inputs.features, inputs.real["features"]
        if too_few("precision", len(fake), len(real)):
            return f"fewer than {NEIGHBOURS + 1} images in a set"
        inside = inside_manifold(fake, real).astype(np.float64)
        return lambda weights: np.atleast_2d(weights) @ inside / np.atleast_2d(weights).sum(axis=1)
