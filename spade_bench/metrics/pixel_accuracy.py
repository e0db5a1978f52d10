"""Pixel accuracy: correct over scored pixels (don't-care left out), in percent, over the whole
validation set; the same confusion counts as mIoU (asking for one scores both)."""
from __future__ import annotations

from spade_bench.metrics import register_metric
from spade_bench.metrics._base import Context, Reference, Score
from spade_bench.metrics._segmentation import SEGMENTATION_FAMILY, CountsMetric, miou_and_accuracy


@register_metric
class PixelAccuracy(CountsMetric):
    name = "pixel_accuracy"
    version = f"{SEGMENTATION_FAMILY}/1"
    direction = "higher"
    label, latex, digits, short = "pixel acc. (%)", r"acc. (\%)", 1, "accuracy"
    order = 20
    aliases = ("acc",)
    reference = Reference("real_val_pixel_accuracy", "ceiling", row="real val photos (segmenter ceiling)",
                          line="real val photos")

    @classmethod
    def describe(cls) -> str:
        return "correct / valid pixels, don't-care excluded"

    def compute(self, context: Context = Context()) -> Score:
        sums = self.sums()
        if sums is None:
            return Score(float("nan"))
        tp, _, fn = sums
        total = (tp + fn).sum()
        return Score(100.0 * float(tp.sum() / total) if total > 0 else float("nan"))

    @classmethod
    def weighted(cls, tp, fp, fn, weights):
        return miou_and_accuracy(tp, fp, fn, weights)[1]
