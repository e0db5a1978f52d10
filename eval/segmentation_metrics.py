"""mIoU and pixel accuracy from one dataset-level confusion matrix, torchmetrics style.

The paper's protocol (and ../shared/REFERENCE.md section 6): IoU per class from the
confusion matrix summed over the whole dataset, not averaged per image (torchmetrics'
MeanIoU averages per sample; that gives different numbers). The state is summed across
DDP ranks, so a distributed evaluation gives the same result as a single process.

- Target pixels equal to `ignore_index` (the don't-care label) are left out entirely.
- A prediction outside [0, num_classes) (e.g. a user segmenter's class that maps to none
  of ours) is wrong for its target pixel: a false negative, and a false positive for no class.
- IoU of a class absent from both targets and predictions is NaN; mIoU averages the
  classes that are present.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat


class ConfusionMatrixMetric(Metric):
    """Dataset-level confusion matrix -> per-class IoU, mIoU and pixel accuracy.

    Args:
        num_classes: number of real classes K (don't-care not counted).
        ignore_index: target value to skip (our don't-care label is K); None skips nothing.
        per_image_counts: also keep per-image tp, fp, fn [K] and valid-pixel counts.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, num_classes: int, ignore_index: Optional[int] = None,
                 per_image_counts: bool = False, **kwargs):
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.per_image_counts = per_image_counts
        # Rows are targets, columns predictions; the extra column counts predictions of no class.
        self.add_state("confusion", torch.zeros(num_classes, num_classes + 1, dtype=torch.long),
                       dist_reduce_fx="sum")
        if per_image_counts:
            for name in ("image_tp", "image_fp", "image_fn", "image_valid"):
                self.add_state(name, [], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """preds, target: int [B, H, W] (or any matching shape with the batch first)."""
        counts, valid = batch_confusion(preds, target, self.num_classes, self.ignore_index)
        self.confusion += counts.sum(0)
        if self.per_image_counts:
            k = self.num_classes
            tp = counts.diagonal(dim1=1, dim2=2)[:, :k]
            self.image_tp.append(tp)
            self.image_fp.append(counts[:, :, :k].sum(1) - tp)
            self.image_fn.append(counts.sum(2) - tp)
            self.image_valid.append(valid)

    def compute(self) -> dict[str, Tensor]:
        """confusion [K, K+1], per_class_iou [K] (NaN where absent), miou and pixel_accuracy
        as fractions in [0, 1]."""
        confusion = self.confusion.double()
        tp = confusion.diagonal()[: self.num_classes]
        fp = confusion[:, : self.num_classes].sum(0) - tp
        fn = confusion.sum(1) - tp
        union = tp + fp + fn
        iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
        total = confusion.sum()
        present = ~torch.isnan(iou)
        return {
            "confusion": self.confusion.clone(),
            "per_class_iou": iou,
            "miou": iou[present].mean() if present.any() else torch.tensor(float("nan"), dtype=torch.float64),
            "pixel_accuracy": tp.sum() / total if total > 0 else torch.tensor(float("nan"), dtype=torch.float64),
        }

    def image_counts(self) -> dict[str, np.ndarray]:
        """Per-image tp, fp, fn: int64 [N, K]; valid: int64 [N] (for per_image_counts.npz)."""
        if not self.per_image_counts:
            raise RuntimeError("construct the metric with per_image_counts=True")
        k = self.num_classes
        if not self.image_tp:  # nothing seen yet
            empty = np.zeros((0, k), np.int64)
            return {"tp": empty, "fp": empty, "fn": empty, "valid": np.zeros(0, np.int64)}
        return {name: dim_zero_cat(getattr(self, f"image_{name}")).cpu().numpy().astype(np.int64)
                for name in ("tp", "fp", "fn", "valid")}


def batch_confusion(preds: Tensor, target: Tensor, num_classes: int,
                    ignore_index: Optional[int] = None) -> tuple[Tensor, Tensor]:
    """One confusion matrix per image: (int64 [B, K, K+1] (rows targets, columns predictions, the
    last column predictions of no class), valid pixels int64 [B]). See the module docstring for
    what counts."""
    if preds.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(preds.shape)} != target shape {tuple(target.shape)}")
    k = num_classes
    preds, target = preds.long().reshape(preds.shape[0], -1), target.long().reshape(target.shape[0], -1)
    in_range = (target >= 0) & (target < k)
    ignored = target == ignore_index if ignore_index is not None else torch.zeros_like(in_range)
    valid = in_range & ~ignored
    out_of_range = ~in_range & ~ignored
    if out_of_range.any():
        bad = target[out_of_range][0].item()
        raise ValueError(f"target label {bad} is outside [0, {k}) and is not the ignore index {ignore_index}")
    preds = torch.where((preds >= 0) & (preds < k), preds, torch.full_like(preds, k))
    # One bincount per image: offsets keep images apart.
    batch = preds.shape[0]
    cells = k * (k + 1)
    index = (target.clamp(0, k - 1) * (k + 1) + preds) + torch.arange(batch, device=preds.device)[:, None] * cells
    counts = torch.bincount(index[valid], minlength=batch * cells).reshape(batch, k, k + 1)
    return counts, valid.sum(1)


def batch_image_counts(preds: Tensor, target: Tensor, num_classes: int,
                 ignore_index: Optional[int] = None) -> dict[str, np.ndarray]:
    """Per-image tp, fp, fn int64 [B, K] and valid [B] of one batch: what the segmentation
    metrics (spade_bench/metrics) accumulate and per_image_counts.npz holds."""
    counts, valid = batch_confusion(preds, target, num_classes, ignore_index)
    k = num_classes
    tp = counts.diagonal(dim1=1, dim2=2)[:, :k]
    out = {"tp": tp, "fp": counts[:, :, :k].sum(1) - tp, "fn": counts.sum(2) - tp, "valid": valid}
    return {name: value.cpu().numpy().astype(np.int64) for name, value in out.items()}


def per_image_mean_iou(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> float:
    """The per-image average of mIoU that the paper does *not* use (for comparison only)."""
    union = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    return float(np.nanmean(np.nanmean(iou, axis=1)))
