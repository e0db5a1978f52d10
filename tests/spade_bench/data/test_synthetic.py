"""The procedural scenes: deterministic, split-disjoint, mostly large uniform regions, and
written to disk by `data synth` in a form the folder format reads back."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cli import app
from spade_bench.config import DataConfig
from spade_bench.data import CLASS_NAMES, build_dataset, class_names
from spade_bench.data.synthetic import BUILDING, SKY, generate_scene, write_scenes


def test_class_list_is_the_issue_order():
    assert CLASS_NAMES == ("sky", "cloud", "mountain", "water", "sand", "grass", "tree", "rock", "building", "road")
    assert class_names(DataConfig()) == list(CLASS_NAMES)


def test_same_seed_same_bytes():
    a = generate_scene(0, "train", 7, (64, 96))
    b = generate_scene(0, "train", 7, (64, 96))
    assert a.label.tobytes() == b.label.tobytes()
    assert a.image.tobytes() == b.image.tobytes()
    assert a.label.shape == (64, 96) and a.image.shape == (64, 96, 3)
    assert a.label.dtype == np.uint8 and a.image.dtype == np.uint8


def test_index_split_and_seed_change_the_scene():
    base = generate_scene(0, "train", 3, (64, 64))
    for other in (generate_scene(0, "train", 4, (64, 64)), generate_scene(0, "val", 3, (64, 64)),
                  generate_scene(1, "train", 3, (64, 64))):
        assert base.image.tobytes() != other.image.tobytes()
    # No val scene repeats a train scene.
    train = {generate_scene(0, "train", i, (32, 32)).image.tobytes() for i in range(20)}
    val = {generate_scene(0, "val", i, (32, 32)).image.tobytes() for i in range(20)}
    assert not train & val


def test_large_uniform_regions_are_common():
    shares = []
    for i in range(40):
        label = generate_scene(0, "train", i, (96, 96)).label
        shares.append(np.bincount(label.ravel(), minlength=10).max() / label.size)
    shares = np.array(shares)
    assert (shares >= 0.3).mean() >= 0.7, shares
    assert np.median(shares) >= 0.3


def test_every_class_occurs_and_no_other_values():
    seen = np.zeros(len(CLASS_NAMES), dtype=bool)
    for i in range(60):
        label = generate_scene(0, "train", i, (48, 48)).label
        assert label.max() < len(CLASS_NAMES)
        seen |= np.bincount(label.ravel(), minlength=len(CLASS_NAMES)) > 0
    assert seen.all(), [n for n, s in zip(CLASS_NAMES, seen) if not s]


def test_image_follows_the_label_map():
    # The sky is bluer than the ground, averaged over scenes (styles vary per scene).
    sky_blue, ground_blue = [], []
    for i in range(12):
        scene = generate_scene(0, "train", i, (64, 64))
        image = scene.image.astype(float)
        blueness = image[..., 2] - image[..., 0]
        sky = scene.label == SKY
        sky_blue.append(blueness[sky].mean())
        ground_blue.append(blueness[scene.label >= 4].mean())
    assert np.mean(sky_blue) > np.mean(ground_blue) + 20


def test_instances_separate_buildings():
    for i in range(60):
        scene = generate_scene(0, "train", i, (64, 64), with_instance=True)
        if (scene.label == BUILDING).any():
            ids = np.unique(scene.instance[scene.label == BUILDING])
            assert (ids // 1000 == BUILDING).all()
            others = scene.label != BUILDING
            assert (scene.instance[others] == scene.label[others]).all()
            return
    pytest.fail("no building in 60 scenes")


def test_synthetic_dataset_samples():
    cfg = replace(DataConfig(), load_size=72, crop_size=64, synthetic_train_size=5, synthetic_val_size=3)
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert (len(train), len(val)) == (5, 3)
    sample = train[2]
    assert sample["image"].shape == (3, 64, 64) and sample["image"].dtype == torch.float32
    assert -1.0 <= sample["image"].min() and sample["image"].max() <= 1.0
    assert sample["label"].shape == (64, 64) and sample["label"].dtype == torch.int64
    assert sample["path"] == "synthetic/train/2" and sample["index"] == 2
    assert "instance" not in sample
    # Val: generated at image_size, no crop or flip, so every read is the same.
    first, again = val[1], val[1]
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["label"], again["label"])
    scene = generate_scene(0, "val", 1, (64, 64))
    assert np.array_equal(first["label"].numpy(), scene.label)
    # Train: a crop of the scene generated at load_size.
    torch.manual_seed(0)
    crop = train[2]["label"].numpy()
    full = generate_scene(0, "train", 2, (72, 72)).label
    windows = [full[t:t + 64, l:l + 64] for t in range(9) for l in range(9)]
    assert any(np.array_equal(crop, w) or np.array_equal(crop, w[:, ::-1]) for w in windows)


def test_synthetic_instances_and_max_val_images():
    cfg = replace(DataConfig(), load_size=64, crop_size=64, use_instance=True, synthetic_val_size=10,
                  max_val_images=4)
    val = build_dataset(cfg, "val")
    assert len(val) == 4
    assert val[0]["instance"].dtype == torch.int32 and val[0]["instance"].shape == (64, 64)


def test_write_scenes_matches_generation(tmp_path):
    write_scenes(tmp_path, 2, size=40, split="val", progress=False)
    label = Image.open(tmp_path / "labels" / "00001.png")
    assert label.mode == "P"
    scene = generate_scene(0, "val", 1, (40, 40))
    assert np.array_equal(np.asarray(label), scene.label)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "images" / "00001.png")), scene.image)
    assert (tmp_path / "label_names.txt").read_text().splitlines()[0] == "0 sky"


def test_synth_cli_writes_pairs_that_load_back_as_folder(tmp_path):
    out = tmp_path / "scenes"
    result = CliRunner().invoke(app, ["data", "synth", "--out", str(out), "--n", "5", "--size", "48"])
    assert result.exit_code == 0, result.output
    assert "--split val" in result.output
    assert CliRunner().invoke(app, ["data", "synth", "--out", str(out), "--n", "2", "--size", "48",
                                    "--split", "val"]).exit_code == 0
    assert len(list((out / "train" / "images").iterdir())) == 5 and len(list((out / "train" / "labels").iterdir())) == 5
    cfg = DataConfig(dataset="folder", root=str(out), label_nc=10, load_size=48, crop_size=48)
    dataset = build_dataset(cfg, "train", augment=False)
    assert len(dataset) == 5 and len(build_dataset(cfg, "val")) == 2
    sample = dataset[3]
    assert np.array_equal(sample["label"].numpy(), generate_scene(0, "train", 3, (48, 48)).label)
    assert class_names(cfg) == list(CLASS_NAMES)
    # A second run into the same folder is refused without --overwrite.
    again = CliRunner().invoke(app, ["data", "synth", "--out", str(out), "--n", "2", "--size", "48"])
    assert again.exit_code != 0 and "--overwrite" in again.output
