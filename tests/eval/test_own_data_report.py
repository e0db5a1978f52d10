"""A user's own 4:3 folder dataset with a void label, scored and reported (issue 23): metrics.json
records the classes' names and colours (void included), each class's real-photo ceiling and
which file each sample renders; the report names the dataset by its folder, tables per-class
IoU with names, labels sample rows by file and draws a colour legend with void in it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from eval.harness import evaluate_run
from reports import figures
from reports.bootstrap import BootstrapSettings
from reports.build import build_report

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


def test_the_report_names_the_folder_tables_classes_and_labels_samples_by_file(street, make_run, monkeypatch,
                                                                              tmp_path):
    root, segmenter = street
    runs = [_score(make_run, root, segmenter, variant) for variant in ("spade", "concat")]
    saved = json.loads((runs[0] / "eval" / "metrics.json").read_text())
    legend, real = saved["classes"], saved["per_class_iou_real"]

    drawn = {}
    save = figures._save

    def keep(fig, path):
        drawn[path.name] = fig
        return save(fig, path)

    monkeypatch.setattr(figures, "_save", keep)
    result = build_report(runs, tmp_path / "report", settings=BootstrapSettings(replicates=20, fid_replicates=10),
                          progress=False)
    md = result["markdown"].read_text()
    assert f"## Dataset: street (`folder` format at `{root}`)" in md
    assert "The paper reports no numbers on street" in md and "on folder" not in md
    table = md.split("### Per-class IoU")[1].split("###")[0]
    header = next(line for line in table.splitlines() if line.startswith("| class"))
    assert header == "| class | colour | spade | concat | real photos (ceiling) |"
    for index, name in enumerate(NAMES):
        row = next(line for line in table.splitlines() if line.startswith(f"| {index} {name} |"))
        assert legend["colours"][index] in row and row.endswith(f"| {real[name]:.1f} |")
        ours = saved["per_class_iou"][name]
        assert f"| {ours:.1f} |" in row if ours is not None else "| – |" in row
    assert f"| 3 void (don't-care, raw value {VOID}) | `{legend['dont_care']['colour']}` | not scored |" in table
    summary = json.loads(result["summary"].read_text())
    assert summary["datasets"]["street"]["format"] == "folder"

    grid = drawn["street_samples.png"]
    rows = [ax.get_ylabel() for ax in grid.axes if ax.get_ylabel()]
    assert rows == ["lane_a", "lane_b", "lane_c"]
    labels = [text.get_text() for legend_ in grid.legends for text in legend_.get_texts()]
    assert "void (don't-care, not scored)" in labels
    assert {"0 sky", "1 grass", "2 road"} <= set(labels)

    named = build_report(runs, tmp_path / "named", dataset_name="CamVid-mini", figures=False, progress=False,
                         settings=BootstrapSettings(replicates=20, fid_replicates=10))
    assert "## Dataset: CamVid-mini (`folder` format at" in named["markdown"].read_text()
