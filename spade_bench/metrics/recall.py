"""Improved recall (Kynkaenniemi et al. 2019): the share of real photos that fall inside the
generated images' manifold, estimated with k-nearest-neighbour balls; a measure of diversity
(a generator that draws one scene whatever the label map has high precision, low recall).

The mirror of precision.py: each generated image's ball has the radius of its k-th nearest
other generated image (k = 3); a real photo counts when it lies in at least one ball
(distance <= radius). Same features and caveats as precision. A fraction in [0, 1].

For the bootstrap the generated set is resampled, so the balls change: in a resample an
image's radius is its k-th nearest neighbour among the other drawn images, counted with
their multiplicities and leaving out the image's own copies (a copy at distance 0 is not a
neighbour, as KID leaves out pairs of an image with itself). With all multiplicities 1 that is
the definition above.
"""
from __future__ import annotations

import numpy as np

from spade_bench.metrics import register_metric
from spade_bench.metrics._base import Context, ReplicateInputs, Replicator, Score
from spade_bench.metrics._features import FeatureMetric
from spade_bench.metrics.precision import (NEIGHBOURS, PRECISION_RECALL_FAMILY, inside_manifold, squared_distances,
                                           too_few)

# Replicates processed together (memory: chunk x N x N float64).
_CHUNK = 16


@register_metric
class Recall(FeatureMetric):
    name = "recall"
    version = f"{PRECISION_RECALL_FAMILY}/1"
    direction = "higher"
    label, latex, digits, short = "recall", "recall", 3, "recall"
    order = 60
    tolerance = (1e-9, 0.0)

    @classmethod
    def describe(cls) -> str:
        return (f"improved recall, Kynkaenniemi et al. 2019: share of real photos within the k={NEIGHBOURS} "
                f"nearest-neighbour ball (distance <= radius) of some generated image, Euclidean on the "
                f"FID-Inception pool3 features (the authors used VGG-16 fc2)")

    def compute(self, context: Context = Context()) -> Score:
        fake, real = self.fake_features(), context.real_features
        if real is None:
            return Score(None, warnings=["recall needs the real photos' features; none were given"])
        warning = too_few("recall", len(fake), len(real))
        if warning:
            return Score(None, warnings=[warning])
        return Score(float(inside_manifold(real, fake).mean()))

    @classmethod
    def replicator(cls, inputs: ReplicateInputs) -> Replicator | str:
        if inputs.features is None or inputs.real is None:
            return "no generated-image features or real statistics"
        if "features" not in inputs.real:
            return "real statistics hold no 'features'"
        fake, real = inputs.features, inputs.real["features"]
        if too_few("recall", len(fake), len(real)):
            return f"fewer than {NEIGHBOURS + 1} images in a set"
        return RecallReplicator(fake, real)


class RecallReplicator:
    """Recall of weighted resamples of the generated images against all real photos.

    Args:
        features: [N, D] generated-image features.
        real_features: [M, D] real-photo features.
        k: neighbours of the balls.
    """

    def __init__(self, features: np.ndarray, real_features: np.ndarray, k: int = NEIGHBOURS):
        self.k = k
        among = squared_distances(features, features)
        np.fill_diagonal(among, np.inf)                # an image is never its own neighbour
        self.order = np.argsort(among, axis=1, kind="stable")[:, :-1]     # the others, nearest first
        self.sorted = np.take_along_axis(among, self.order, axis=1)       # [N, N - 1]
        self.real_to_fake = squared_distances(real_features, features)   # [M, N]

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
        return np.concatenate([self._chunk(weights[s:s + _CHUNK]) for s in range(0, len(weights), _CHUNK)])

    def _chunk(self, weights: np.ndarray) -> np.ndarray:
        # Neighbour multiplicities in distance order, per image: [B, N, N - 1].
        counts = np.cumsum(weights[:, self.order], axis=2)
        reached = counts >= self.k
        defined = reached[:, :, -1]                       # k neighbours among the other drawn images
        position = reached.argmax(axis=2)                 # the first order position reaching k
        radii = np.take_along_axis(np.broadcast_to(self.sorted, counts.shape), position[..., None], axis=2)[..., 0]
        drawn = weights > 0
        covered = ((self.real_to_fake[None, :, :] <= radii[:, None, :]) & drawn[:, None, :]).any(axis=2)
        out = covered.mean(axis=1)
        out[~(defined | ~drawn).all(axis=1)] = np.nan     # a drawn image without k neighbours: undefined
        return out
