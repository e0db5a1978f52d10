"""The Cityscapes 35 -> 19 trainId mapping, on label files written with known ids."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eval.harness import evaluate_run
from eval.label_maps import CITYSCAPES_19_CLASSES, IGNORE, get_label_mapping
from spade_bench.config import RunConfig, apply_overrides, config_hash, with_dataset
from spade_bench.data import build_dataset
from spade_bench.data.files import load_label_array
from spade_bench.errors import ConfigError, EvalError

# (Cityscapes label id, name, trainId) from cityscapesScripts' labels.py, written out here
# independently of the table under test.
KNOWN = [(0, "unlabeled", 255), (1, "ego vehicle", 255), (4, "static", 255), (6, "ground", 255), (7, "road", 0),
         (8, "sidewalk", 1), (9, "parking", 255), (10, "rail track", 255), (11, "building", 2), (12, "wall", 3),
         (13, "fence", 4), (14, "guard rail", 255), (15, "bridge", 255), (16, "tunnel", 255), (17, "pole", 5),
         (18, "polegroup", 255), (19, "traffic light", 6), (20, "traffic sign", 7), (21, "vegetation", 8),
         (22, "terrain", 9), (23, "sky", 10), (24, "person", 11), (25, "rider", 12), (26, "car", 13),
         (27, "truck", 14), (28, "bus", 15), (29, "caravan", 255), (30, "trailer", 255), (31, "train", 16),
         (32, "motorcycle", 17), (33, "bicycle", 18), (34, "license plate slot", 255)]


def _label_file(path: Path, ids: list[int]) -> Path:
    """A 2 x N labelIds PNG: row 0 the ids, row 1 the same ids reversed."""
    array = np.array([ids, ids[::-1]], dtype=np.uint8)
    Image.fromarray(array).save(path)
    return path


def test_cityscapes_label_files_map_to_train_ids(tmp_path):
    data = with_dataset(RunConfig(), "cityscapes", str(tmp_path)).data
    ids = [i for i, _, _ in KNOWN]
    labels = torch.from_numpy(load_label_array(_label_file(tmp_path / "a_gtFine_labelIds.png", ids), data))
    mapped = get_label_mapping("cityscapes-35-to-19", data.label_nc).apply(labels)
    expected = torch.tensor([[t for _, _, t in KNOWN], [t for _, _, t in KNOWN][::-1]])
    assert torch.equal(mapped, expected)
    # The 19 trainIds each come from exactly one id, and carry the class names of that id.
    train = {t: name for _, name, t in KNOWN if t != IGNORE}
    assert sorted(train) == list(range(19))
    assert [train[t] for t in range(19)] == list(CITYSCAPES_19_CLASSES)


def test_out_of_range_ids_are_ignored():
    mapping = get_label_mapping("cityscapes-35-to-19")
    assert mapping.apply(torch.tensor([-1, 35, 255, 7])).tolist() == [IGNORE, IGNORE, IGNORE, 0]


def test_unknown_mapping_and_wrong_label_count_are_errors():
    with pytest.raises(ConfigError, match="cityscapes-35-to-19"):
        get_label_mapping("ade-150-to-20")
    with pytest.raises(ConfigError, match="data.label_nc is 150"):
        get_label_mapping("cityscapes-35-to-19", 150)
    assert get_label_mapping(None) is None


def test_protocol_keys_are_config_keys_outside_the_experiment_hash():
    base = RunConfig()
    changed = apply_overrides(base, ["eval.label_mapping=cityscapes-35-to-19", "eval.segmenter_input_size=generation",
                                     "eval.real_set=test"])
    assert (changed.eval.label_mapping, changed.eval.segmenter_input_size, changed.eval.real_set) == \
        ("cityscapes-35-to-19", "generation", "test")
    assert config_hash(changed) == config_hash(base)
    with pytest.raises(ConfigError):
        apply_overrides(base, ["eval.real_set=train"])


# ----------------------------------------------------------------------------- wired into evaluate_run

class SizeProbe(torch.nn.Module):
    """19 logits; class 0 (road) wins where the input is 32 wide, class 1 (sidewalk) elsewhere."""

    def forward(self, x):
        at_32 = torch.full_like(x[:, :1], 1.0 if x.shape[-1] == 32 else -1.0)
        return torch.cat([at_32, -at_32, torch.zeros_like(x[:, :1]).repeat(1, 17, 1, 1) - 5], dim=1)


def _probe(tmp_path, input_size):
    path = tmp_path / "probe.pt"
    torch.jit.script(SizeProbe()).save(str(path))
    path.with_suffix(".json").write_text(json.dumps({"name": "probe", "input_size": input_size, "output": "logits"}))
    return f"eval.segmenter={path}"


def test_cityscapes_mapping_and_segmenter_input_size_in_evaluate_run(tmp_path, make_run, stub_inception):
    """A 19-class segmenter scored through the 35 -> 19 mapping: only road (id 7) and sidewalk
    (id 8) pixels count, at the segmenter's native width (32: all road) or the generation width
    (64: all sidewalk)."""
    cfg, run = make_run(extra=["data.label_nc=35"])
    labels = torch.stack([build_dataset(cfg.data, "val", augment=False)[i]["label"] for i in range(4)])
    road, sidewalk = int((labels == 7).sum()), int((labels == 8).sum())
    assert road and sidewalk  # the synthetic scenes have both
    segmenter = _probe(tmp_path, [32, 32])
    common = [segmenter, "eval.label_mapping=cityscapes-35-to-19"]
    native = evaluate_run(run, metric="miou", device="cpu", overrides=common, progress=False)
    assert native["metrics"]["pixel_accuracy"] == pytest.approx(100 * road / (road + sidewalk))
    assert native["protocol"]["label_mapping"] == "cityscapes-35-to-19"
    assert native["protocol"]["segmenter_input_size"] == "native"
    assert set(native["per_class_iou"]) == set(CITYSCAPES_19_CLASSES)
    generation = evaluate_run(run, metric="miou", device="cpu", progress=False,
                              overrides=common + ["eval.segmenter_input_size=generation"])
    assert generation["metrics"]["pixel_accuracy"] == pytest.approx(100 * sidewalk / (road + sidewalk))
    assert generation["protocol"]["segmenter_input_size"] == "generation"


def test_real_set_test_compares_against_the_test_photos(tmp_path, make_run, stub_inception):
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for split in ("train", "val", "test"):
        for sub in ("images", "labels"):
            (root / split / sub).mkdir(parents=True)
        for i in range(3):
            shade = 40 if split != "test" else 220  # test photos look nothing like val
            Image.fromarray(np.clip(rng.normal(shade, 10, (64, 64, 3)), 0, 255).astype(np.uint8)).save(
                root / split / "images" / f"{i}.png")
            Image.fromarray(np.zeros((64, 64), np.uint8)).save(root / split / "labels" / f"{i}.png")
    _, run = make_run(extra=["data.dataset=folder", f"data.root={root}", "data.max_val_images=3"])
    val = evaluate_run(run, metric="fid", device="cpu", progress=False)
    test = evaluate_run(run, metric="fid", device="cpu", overrides=["eval.real_set=test"], progress=False)
    assert (val["protocol"]["real_set"], test["protocol"]["real_set"]) == ("val", "test")
    assert "_test_" in Path(test["files"]["real_stats"]).name and "_val_" in Path(val["files"]["real_stats"]).name
    assert test["metrics"]["fid"] != val["metrics"]["fid"]
    _, synthetic = make_run("synthetic")
    with pytest.raises(EvalError, match="eval.real_set=val"):
        evaluate_run(synthetic, metric="fid", device="cpu", overrides=["eval.real_set=test"], progress=False)
