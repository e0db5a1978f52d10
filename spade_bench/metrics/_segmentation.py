"""What mIoU and pixel accuracy share: one dataset-level confusion summary, and its weighted form.

The harness segments each generated image and counts, per image and class, true positives,
false positives and false negatives against the label map (eval/segmentation_metrics.py;
don't-care pixels are left out, a prediction of no class is a false negative). Summed over
the images these are the diagonal, column and row sums of one dataset-level confusion
matrix, which is what the paper's protocol scores (not a per-image average).
"""
from __future__ import annotations

from typing import ClassVar, Optional

import numpy as np

from spade_bench.metrics._base import Batch, Metric, ReplicateInputs, Replicator

SEGMENTATION_FAMILY = "spade-bench-confusion-miou"
SEGMENTATION_PROTOCOL_KEYS = ("segmenter_sha256", "segmenter_input_size", "label_mapping", "label_resize")
SEGMENTATION_RECORDED_KEYS = ("segmenter", "segmenter_input")


class CountsMetric(Metric):
    """A metric of the dataset-level tp, fp, fn [K] sums (state: their sums, added across ranks)."""

    inputs: ClassVar[str] = "segmentation"
    group: ClassVar[Optional[str]] = "confusion"
    protocol_keys: ClassVar[tuple[str, ...]] = SEGMENTATION_PROTOCOL_KEYS
    recorded_keys: ClassVar[tuple[str, ...]] = SEGMENTATION_RECORDED_KEYS
    files: ClassVar[tuple[str, ...]] = ("per_image_counts",)
    tolerance: ClassVar[tuple[float, float]] = (0.05, 0.0)

    def __init__(self) -> None:
        super().__init__()
        for name in ("tp", "fp", "fn"):
            self.add_state(name, None, reduce="sum")

    def update(self, batch: Batch) -> None:
        if batch.counts is None:
            raise ValueError(f"{self.name} is computed from the segmenter's per-image counts; the batch has none")
        for name in ("tp", "fp", "fn"):
            total = np.asarray(batch.counts[name], dtype=np.int64).sum(axis=0)
            current = getattr(self, name)
            setattr(self, name, total if current is None else current + total)

    def sums(self) -> Optional[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The dataset-level tp, fp, fn as float64 [K] (exact for counts below 2^53), or None."""
        if self.tp is None:
            return None
        return self.tp.astype(np.float64), self.fp.astype(np.float64), self.fn.astype(np.float64)

    @classmethod
    def weighted(cls, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The metric of weighted image sets from per-image tp, fp, fn [N, K]: weights [B, N] -> [B]."""
        raise NotImplementedError

    @classmethod
    def replicator(cls, inputs: ReplicateInputs) -> Replicator | str:
        if inputs.counts is None:
            return "no per-image counts"
        counts = inputs.counts
        return lambda weights: cls.weighted(counts["tp"], counts["fp"], counts["fn"], weights)


def per_class_iou(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """IoU per class from dataset-level sums (float64 [K]); NaN where the union is empty."""
    union = tp + fp + fn
    return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


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
