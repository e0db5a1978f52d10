"""A user's own 4:3 folder dataset with a void label, scored (issue 23): metrics.json records the
classes' names and colours (void included), each class's real-photo ceiling and which file
each sample renders."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from eval.harness import evaluate_run

NAMES = ("sky", "grass", "road")
VOID = 3


class ThreeClassSegmenter(nn.Module):
    """Fixed 1x1 convolution: logits for 3 classes from the colour."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(3, 3, 1, 1, generator=generator))

    def forward(self, x):
        return self.conv(x)


@pytest.fixture
def street(tmp_path):
    """ROOT/{train,val}/{images,labels}: 64x48 photos (4:3), classes 0..2 in bands, void (3) in a corner."""
    root = tmp_path / "street"
    rng = np.random.default_rng(0)
    colours = np.array([[90, 150, 230], [60, 170, 60], [110, 110, 110], [0, 0, 0]])
    for split, names in (("train", ("t0", "t1", "t2")), ("val", ("lane_a", "lane_b", "lane_c"))):
        for sub in ("images", "labels"):
            (root / split / sub).mkdir(parents=True)
        for k, name in enumerate(names):
            label = np.repeat((np.arange(48) * 3 // 48)[:, None], 64, axis=1).astype(np.uint8)
            label[:8, : 8 + 8 * k] = VOID
            photo = np.clip(colours[label] + rng.integers(-10, 11, (48, 64, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(photo).save(root / split / "images" / f"{name}.jpg", quality=95)
            Image.fromarray(label).save(root / split / "labels" / f"{name}.png")
    (root / "label_names.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(NAMES)) + f"{VOID} void\n")
    segmenter = tmp_path / "three.pt"
    torch.jit.script(ThreeClassSegmenter()).save(str(segmenter))
    segmenter.with_suffix(".json").write_text(json.dumps({"name": "three-1x1", "mean": [0.5] * 3, "std": [0.5] * 3}))
    return root, segmenter


def _score(make_run, root, segmenter, variant):
    _, run = make_run(variant, variant=variant, extra=[
        "data.dataset=folder", f"data.root={root}", "data.label_nc=3", "data.contain_dontcare=true",
        f"data.dont_care_value={VOID}", "data.aspect_ratio=1.333", "data.crop_size=128", "data.load_size=128",
        "data.max_val_images=3"])
    evaluate_run(run, metric="miou", device="cpu", overrides=[f"eval.segmenter={segmenter}"], progress=False)
    return run


def test_metrics_json_records_class_names_colours_files_and_ceilings(street, make_run):
    root, segmenter = street
    saved = json.loads((_score(make_run, root, segmenter, "spade") / "eval" / "metrics.json").read_text())
    legend = saved["classes"]
    assert legend["names"] == list(NAMES) and len(legend["colours"]) == 3
    assert legend["dont_care"]["name"] == "void" and legend["dont_care"]["value"] == VOID
    assert legend["dont_care"]["colour"] not in legend["colours"]
    assert saved["sample_files"] == {f"{i:05d}.png": f"val/images/lane_{c}.jpg" for i, c in enumerate("abc")}
    real = saved["per_class_iou_real"]
    assert set(real) == set(NAMES) == set(saved["per_class_iou"])
    known = [v for v in real.values() if v is not None]
    assert np.mean(known) == pytest.approx(saved["references"]["real_val_miou"])  # the ceiling, class by class
