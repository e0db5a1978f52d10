"""mIoU: the mean over classes of IoU from one dataset-level confusion matrix, in percent.

The paper's protocol (../shared/REFERENCE.md section 6): IoU per class from counts summed
over the whole validation set, not averaged per image (torchmetrics' MeanIoU averages per
sample, which gives other numbers); classes absent from both the targets and the predictions
are left out of the mean. Bounded by the segmenter's own score on the real photos.
"""
from __future__ import annotations

import numpy as np

from spade_bench.metrics import register_metric
from spade_bench.metrics._base import Context, Reference, Score
from spade_bench.metrics._segmentation import SEGMENTATION_FAMILY, CountsMetric, miou_and_accuracy, per_class_iou


@register_metric
class MeanIoU(CountsMetric):
    name = "miou"
    version = f"{SEGMENTATION_FAMILY}/1"
    direction = "higher"
    label, latex, digits, short = "mIoU (%)", r"mIoU (\%)", 1, "mIoU"
    order = 10
    reference = Reference("real_val_miou", "ceiling", row="real val photos (segmenter ceiling)",
                          line="real val photos")

    @classmethod
    def describe(cls) -> str:
        return "dataset-level confusion matrix; classes absent from targets and predictions excluded"

    def compute(self, context: Context = Context()) -> Score:
        sums = self.sums()
        if sums is None:
            return Score(float("nan"))
        iou = per_class_iou(*sums)
        present = ~np.isnan(iou)
        if not present.any():
            return Score(float("nan"))
        # torch's reduction order, which metrics.json has always used: np.mean sums in another
        # order and can differ in the last bit.
        import torch  # a dependency of the harness, which is the only caller of compute

        return Score(100.0 * float(torch.from_numpy(iou[present]).mean()))

    @classmethod
    def weighted(cls, tp, fp, fn, weights):
        return miou_and_accuracy(tp, fp, fn, weights)[0]
