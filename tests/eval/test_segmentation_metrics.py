"""The dataset-level confusion-matrix metric against a NumPy reference."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eval.segmentation_metrics import ConfusionMatrixMetric, per_image_mean_iou


def numpy_reference(preds: np.ndarray, target: np.ndarray, k: int, ignore: int | None):
    """Per-class IoU (NaN where absent), mIoU over present classes, pixel accuracy."""
    valid = target != ignore if ignore is not None else np.ones_like(target, bool)
    p, t = preds[valid], target[valid]
    iou = []
    for c in range(k):
        tp = np.sum((p == c) & (t == c))
        union = np.sum((p == c) | (t == c))
        iou.append(tp / union if union else math.nan)
    iou = np.array(iou)
    return iou, np.nanmean(iou), np.mean(p == t)


def test_matches_numpy_reference_with_dont_care():
    rng = np.random.default_rng(0)
    k = 5
    target = rng.integers(0, k + 1, size=(6, 16, 16))  # k is don't-care
    preds = np.where(rng.random((6, 16, 16)) < 0.6, np.minimum(target, k - 1), rng.integers(0, k, (6, 16, 16)))
    metric = ConfusionMatrixMetric(k, ignore_index=k)
    for start in (0, 2, 4):  # several updates accumulate
        metric.update(torch.from_numpy(preds[start:start + 2]), torch.from_numpy(target[start:start + 2]))
    result = metric.compute()
    iou, miou, accuracy = numpy_reference(preds, target, k, ignore=k)
    np.testing.assert_allclose(result["per_class_iou"].numpy(), iou, rtol=1e-12)
    assert result["miou"].item() == pytest.approx(miou, rel=1e-12)
    assert result["pixel_accuracy"].item() == pytest.approx(accuracy, rel=1e-12)
    assert result["confusion"][:, :k].sum().item() == np.sum(target != k)


def test_dataset_level_differs_from_per_image_average():
    # Image 1: a big class-0 region predicted perfectly, a one-pixel class 1 missed.
    # Image 2: a small class-1 region predicted perfectly. Dataset-level IoU of class 1 is
    # 4/5; the per-image average gives image 1 a class-1 IoU of 0.
    target1 = torch.zeros(1, 4, 4, dtype=torch.long)
    target1[0, 0, 0] = 1
    preds1 = torch.zeros(1, 4, 4, dtype=torch.long)
    target2 = torch.zeros(1, 4, 4, dtype=torch.long)
    target2[0, :2, :2] = 1
    preds2 = target2.clone()
    metric = ConfusionMatrixMetric(2, per_image_counts=True)
    metric.update(preds1, target1)
    metric.update(preds2, target2)
    result = metric.compute()
    iou1 = 4 / 5
    iou0 = 27 / 28
    assert result["miou"].item() == pytest.approx((iou0 + iou1) / 2)
    counts = metric.image_counts()
    per_image = per_image_mean_iou(counts["tp"], counts["fp"], counts["fn"])
    assert per_image == pytest.approx(((15 / 16 + 0) / 2 + 1.0) / 2)
    assert abs(per_image - result["miou"].item()) > 0.1


def test_absent_class_is_nan_and_left_out_of_miou():
    target = torch.tensor([[[0, 0, 2, 2]]])
    preds = torch.tensor([[[0, 2, 2, 2]]])
    metric = ConfusionMatrixMetric(4)
    metric.update(preds, target)
    result = metric.compute()
    iou = result["per_class_iou"]
    assert math.isnan(iou[1].item()) and math.isnan(iou[3].item())
    assert result["miou"].item() == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_prediction_of_no_class_counts_as_a_miss():
    target = torch.tensor([[[0, 1, 1, 1]]])
    preds = torch.tensor([[[0, 1, -1, 7]]])  # -1 and 7: classes we do not have
    metric = ConfusionMatrixMetric(2)
    metric.update(preds, target)
    result = metric.compute()
    assert result["pixel_accuracy"].item() == pytest.approx(2 / 4)
    assert result["per_class_iou"][1].item() == pytest.approx(1 / 3)
    assert result["per_class_iou"][0].item() == pytest.approx(1.0)


def test_target_out_of_range_is_an_error():
    metric = ConfusionMatrixMetric(3, ignore_index=3)
    with pytest.raises(ValueError, match="target label 9"):
        metric.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 9))


def test_per_image_counts_sum_to_the_dataset_matrix():
    rng = np.random.default_rng(1)
    target = torch.from_numpy(rng.integers(0, 4, size=(5, 8, 8)))
    preds = torch.from_numpy(rng.integers(0, 3, size=(5, 8, 8)))
    metric = ConfusionMatrixMetric(3, ignore_index=3, per_image_counts=True)
    metric.update(preds[:3], target[:3])
    metric.update(preds[3:], target[3:])
    counts = metric.image_counts()
    assert counts["tp"].shape == (5, 3) and counts["tp"].dtype == np.int64
    confusion = metric.compute()["confusion"].numpy()
    np.testing.assert_array_equal(counts["tp"].sum(0), np.diag(confusion[:, :3]))
    np.testing.assert_array_equal(counts["fn"].sum(0), confusion.sum(1) - np.diag(confusion[:, :3]))
    np.testing.assert_array_equal(counts["valid"], (target != 3).reshape(5, -1).sum(1).numpy())


def test_state_is_summed_across_ranks():
    # merge_state applies the same reductions a DDP sync does: the confusion matrix is summed.
    rng = np.random.default_rng(2)
    target = torch.from_numpy(rng.integers(0, 3, size=(4, 8, 8)))
    preds = torch.from_numpy(rng.integers(0, 3, size=(4, 8, 8)))
    whole, rank0, rank1 = (ConfusionMatrixMetric(3) for _ in range(3))
    whole.update(preds, target)
    rank0.update(preds[:2], target[:2])
    rank1.update(preds[2:], target[2:])
    rank0.merge_state(rank1)
    assert torch.equal(rank0.compute()["confusion"], whole.compute()["confusion"])
    assert rank0._reductions["confusion"] is not None
