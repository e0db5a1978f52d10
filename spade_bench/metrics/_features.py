"""What the feature metrics (FID, KID, precision, recall) share: the generated images' FID-Inception
pool3 features, accumulated batch by batch and compared with the real photos' features.

The harness extracts the features once per batch (eval/fid.py, under the run's FID protocol)
and hands the same arrays to every feature metric; the real photos' features come from the
cached real statistics, which also hold mu and sigma.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from spade_bench.metrics._base import Batch, Metric

# The width of the Inception pool3 features FID uses.
FEATURE_DIM = 2048
FEATURE_PROTOCOL_KEYS = ("fid_protocol", "fid_extractor_sha256", "real_set")


class FeatureMetric(Metric):
    """A metric of the generated images' features against the real photos' (state: the feature
    batches, concatenated across ranks)."""

    inputs: ClassVar[str] = "features"
    protocol_keys: ClassVar[tuple[str, ...]] = FEATURE_PROTOCOL_KEYS
    files: ClassVar[tuple[str, ...]] = ("fake_features", "real_stats")
    min_images: ClassVar[int] = 2

    def __init__(self) -> None:
        super().__init__()
        self.add_state("features", [], reduce="cat")

    def update(self, batch: Batch) -> None:
        if batch.fake_features is None:
            raise ValueError(f"{self.name} is computed from the generated images' features; the batch has none")
        self.features.append(batch.fake_features)

    def fake_features(self) -> np.ndarray:
        """float32 [N, D]: the generated images' features in image order."""
        if not self.features:
            return np.zeros((0, FEATURE_DIM), np.float32)
        return np.concatenate(self.features).astype(np.float32)
