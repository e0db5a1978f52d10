"""KID: the unbiased squared MMD between the generated and the real photos' FID-Inception
features under the cubic polynomial kernel (x.y/D + 1)^3 (Binkowski et al. 2018), mean and
std over random subsets, by torchmetrics' KernelInceptionDistance.

Unlike FID it is unbiased at small image counts, which is why the smoke preset's reports
lean on it. The subsets are drawn with eval.seed; their size stays below both set sizes so
that the std over subsets measures something (`kid_subset_size`).
"""
from __future__ import annotations

import warnings
from typing import Any, Mapping, Optional

import numpy as np

from spade_bench.errors import EvalError
from spade_bench.metrics import register_metric
from spade_bench.metrics._base import Context, ReplicateInputs, Replicator, Score
from spade_bench.metrics._features import FEATURE_PROTOCOL_KEYS, FeatureMetric
from spade_bench.metrics.fid import package_version

KID_VERSION = "spade-bench-kid/1"


@register_metric
class KID(FeatureMetric):
    """Args: subsets, subset_size: eval.kid_subsets, eval.kid_subset_size; seed: eval.seed."""

    name = "kid"
    version = KID_VERSION
    direction = "lower"
    label, latex, digits, scale, short = "KID ×10³", r"KID$\times 10^3$", 2, 1e3, "KID"
    interval_digits = 2
    order = 40
    extras = ("kid_std",)
    protocol_keys = FEATURE_PROTOCOL_KEYS + ("kid_subset_size", "kid_subsets")
    tolerance = (0.0, 0.5)

    def __init__(self, subsets: int = 100, subset_size: int = 1000, seed: int = 0):
        super().__init__()
        self.subsets, self.subset_size, self.seed = int(subsets), int(subset_size), int(seed)

    @classmethod
    def from_settings(cls, settings: Any = None) -> "KID":
        if settings is None:
            return cls()
        return cls(settings.kid_subsets, settings.kid_subset_size, settings.seed)

    @classmethod
    def describe(cls) -> str:
        return f"torchmetrics {package_version('torchmetrics')} KernelInceptionDistance on the FID features"

    def compute(self, context: Context = Context()) -> Score:
        if context.real_features is None:
            raise EvalError("KID needs the real photos' features; none were given")
        fake, real = self.fake_features(), context.real_features
        mean, std, size = kid_from_features(real, fake, subsets=self.subsets, subset_size=self.subset_size,
                                            seed=self.seed)
        warning = kid_subset_warning(self.subset_size, size, len(real), len(fake))
        return Score(mean, extras={"kid_std": std}, protocol={"kid_subset_size": size, "kid_subsets": self.subsets},
                     warnings=[warning] if warning else [])

    @classmethod
    def replicator(cls, inputs: ReplicateInputs) -> Replicator | str:
        if inputs.features is None or inputs.real is None:
            return "no generated-image features or real statistics"
        if "features" not in inputs.real:
            return "real statistics hold no 'features'"
        return KIDReplicator(inputs.features, inputs.real["features"])

    @classmethod
    def consistency_slack(cls, reported: float, values: Mapping[str, Optional[float]]) -> float:
        # The evaluator averages random subsets: allow a few of their standard deviations.
        return max(super().consistency_slack(reported, values), 5 * (values.get("kid_std") or 0.0))


def kid_subset_size(requested: int, num_real: int, num_fake: int) -> int:
    """The KID subset size: `requested` when it is below both set sizes, else half the smaller set.

    A subset as large as the set is the set itself: every subset is then the same, and the
    std over subsets is ~1e-16 however uncertain the estimate is. Subsets must be a true
    sample of the set for their spread to mean anything.
    """
    smaller = min(int(num_real), int(num_fake))
    size = int(requested) if int(requested) < smaller else smaller // 2
    if size < 2:
        raise EvalError(f"KID needs subsets of at least 2 images drawn from larger sets; got {num_real} real and "
                        f"{num_fake} generated images (eval.kid_subset_size={requested}); evaluate at least "
                        f"4 images (eval.num_images)")
    return size


def kid_subset_warning(requested: int, used: int, num_real: int, num_fake: int) -> Optional[str]:
    """The warning to show when KID used another subset size than requested, else None."""
    if int(used) == int(requested):
        return None
    return (f"KID subsets of {used} images instead of the requested {requested} "
            f"(eval.kid_subset_size): a subset must be smaller than both sets ({num_real} real and "
            f"{num_fake} generated images), so half the smaller set is used; compare KIDs only at "
            f"equal subset sizes")


def kid_from_features(real_features: np.ndarray, fake_features: np.ndarray, *, subsets: int = 100,
                      subset_size: int = 1000, seed: int = 0) -> tuple[float, float, int]:
    """torchmetrics' KernelInceptionDistance on precomputed features.

    The metric's feature module is the identity, so the computation (cubic polynomial kernel
    MMD over random subsets) is torchmetrics' own. The subset size is `kid_subset_size`: below
    both set sizes, so the std over subsets measures how the estimate varies with the images.
    Returns (mean, std, subset size used).
    """
    # Imported here: torch is the harness's, and torchmetrics' image package is slow to import.
    import torch
    from torchmetrics.image.kid import KernelInceptionDistance

    size = kid_subset_size(subset_size, len(real_features), len(fake_features))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "will save all extracted features"
        metric = KernelInceptionDistance(feature=torch.nn.Identity(), subsets=int(subsets), subset_size=size)
    metric.update(torch.as_tensor(np.asarray(real_features), dtype=torch.float64), real=True)
    metric.update(torch.as_tensor(np.asarray(fake_features), dtype=torch.float64), real=False)
    # KID draws its subsets from the global RNG: seed it, then leave the caller's RNG as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std), size


# ----------------------------------------------------------------------------- replicate

def _kernel_sum(a: np.ndarray, b: np.ndarray, dim: int, chunk: int = 1024) -> np.ndarray:
    """Row sums of the cubic polynomial kernel (a b^T / dim + 1)^3, in chunks of b."""
    out = np.zeros(len(a))
    for start in range(0, len(b), chunk):
        out += ((a @ b[start:start + chunk].T / dim + 1) ** 3).sum(axis=1)
    return out


class KIDReplicator:
    """Unbiased KID (MMD^2, kernel (x.y/D + 1)^3) of weighted resamples against fixed real features.

    Pairs of an image with a copy of itself are left out of the fake-fake mean, so a resample
    stays an unbiased estimate; a resample with one distinct image gives NaN (undefined).

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
        with np.errstate(invalid="ignore", divide="ignore"):  # one distinct image: undefined, NaN
            fake_term = (quadratic - squared @ self.kernel_diag) / (n ** 2 - squared.sum(axis=1))
        return fake_term + self.real_term - 2 * (weights @ self.cross_mean) / n
