"""Each real format loads: the shared CMP Facades and COCO-Stuff sample, small Cityscapes and
ADE20K trees made here, and the user folder format; label values map as the original does."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spade_bench.config import DataConfig, RunConfig, with_dataset
from spade_bench.data import build_dataset, class_names, colorize, load_label_file
from spade_bench.data.formats import list_pairs
from spade_bench.data.palette import FACADES_PALETTE
from spade_bench.errors import DataError


def dataset_cfg(name: str, root, **changes) -> DataConfig:
    """The dataset's original defaults at a small size (fast tests)."""
    data = with_dataset(RunConfig(), name, str(root)).data
    return replace(data, **{"load_size": 72, "crop_size": 64, **changes})


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3)).astype(np.uint8)


# ----------------------------------------------------------------------------- shared data

def test_facades(facades_root):
    cfg = dataset_cfg("facades", facades_root)
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert (len(train), len(val)) == (300, 78)
    # Held out by a seeded hash (data.split_seed), not the last 78 by name; each split in name order.
    assert [p.key for p in train.pairs][0] == "cmp_b0001"
    assert [p.key for p in train.pairs] == sorted(p.key for p in train.pairs)
    assert {p.key for p in train.pairs}.isdisjoint(p.key for p in val.pairs)
    sample = val[0]
    assert sample["image"].shape == (3, 64, 64) and sample["label"].shape == (64, 64)
    assert sample["path"].endswith(".jpg") and "instance" not in sample
    values = set(sample["label"].unique().tolist())
    assert values <= set(range(1, 13))
    names = class_names(cfg)
    assert len(names) == 13 and names[1:4] == ["background", "facade", "window"] and names[0] == "class_0"


def test_real_facades_split_spans_the_name_order(facades_root):
    """The 78 val pairs come from every part of the name order (the files are not exchangeable in
    that order), the same for the same seed, other ones for another seed."""
    cfg = dataset_cfg("facades", facades_root)
    assert cfg.split_seed == 0
    val = [int(p.key[len("cmp_b"):]) for p in build_dataset(cfg, "val").pairs]
    blocks = np.histogram(val, bins=[1, 101, 201, 301, 379])[0]
    assert blocks.sum() == 78 and blocks.min() >= 10, blocks
    assert val == [int(p.key[len("cmp_b"):]) for p in build_dataset(cfg, "val").pairs]
    other = {p.key for p in build_dataset(replace(cfg, split_seed=1), "val").pairs}
    assert len(other) == 78 and other != {f"cmp_b{n:04d}" for n in val}
    # Unset (a config saved before the key): the old rule, the last 78 by name.
    old = [p.key for p in build_dataset(replace(cfg, split_seed=None), "val").pairs]
    assert old == [f"cmp_b{n:04d}" for n in range(301, 379)]


def make_facades(root: Path, count: int) -> Path:
    for n in range(1, count + 1):
        save(root / "base" / f"cmp_b{n:04d}.jpg", photo(12, 12, n))
        save(root / "base" / f"cmp_b{n:04d}.png", np.full((12, 12), 1 + n % 12, np.uint8))
    return root


def test_facades_seeded_split_keeps_the_share(tmp_path):
    from spade_bench.data.formats import split_rule
    from spade_bench.data.formats.facades import val_count

    cfg = dataset_cfg("facades", make_facades(tmp_path, 40))
    keys = {split: [p.key for p in list_pairs(cfg, split)] for split in ("train", "val")}
    assert len(keys["val"]) == val_count(40) == round(40 * 78 / 378)
    assert set(keys["train"]).isdisjoint(keys["val"]) and len(keys["train"]) + len(keys["val"]) == 40
    assert keys["val"] == sorted(keys["val"]) and keys["val"] != [f"cmp_b{n:04d}" for n in range(33, 41)]
    by_seed = {seed: [p.key for p in list_pairs(replace(cfg, split_seed=seed), "val")] for seed in range(4)}
    assert by_seed[0] == keys["val"] and len({tuple(v) for v in by_seed.values()}) == 4
    assert "split_seed=0" in split_rule(cfg) and "sha256" in split_rule(cfg)
    assert "last" in split_rule(replace(cfg, split_seed=None))


def test_split_seed_is_part_of_the_experiment():
    from spade_bench.config import config_hash, experiment_diff, resolve
    from spade_bench.errors import ConfigError

    facades = resolve("spade", dataset="facades", root="/data/facades")
    assert facades.data.split_seed == 0
    other = resolve("spade", dataset="facades", root="/data/facades", overrides=["data.split_seed=3"])
    assert config_hash(other) != config_hash(facades)
    assert experiment_diff(facades, other) == {"data.split_seed": (0, 3)}
    with pytest.raises(ConfigError, match=r"data.split_seed=1: dataset 'synthetic'.*only facades.*remove"):
        resolve("spade", overrides=["data.split_seed=1"])


def test_facades_colour_label_reads_like_the_index_label(facades_root, tmp_path):
    cfg = dataset_cfg("facades", facades_root)
    index_path = facades_root / "base" / "cmp_b0002.png"
    colour_path = tmp_path / "colour.png"
    Image.open(index_path).convert("RGB").save(colour_path)
    assert torch.equal(load_label_file(colour_path, cfg), load_label_file(index_path, cfg))
    assert load_label_file(index_path, cfg).dtype == torch.int64
    # Colours drawn by colorize with the dataset palette read back too.
    label = load_label_file(index_path, cfg)
    drawn = colorize(label, 13, palette=FACADES_PALETTE).permute(1, 2, 0).numpy()
    save(tmp_path / "drawn.png", np.ascontiguousarray(drawn))
    assert torch.equal(load_label_file(tmp_path / "drawn.png", cfg), label)
    # A colour that is not in the palette is named.
    odd = np.ascontiguousarray(drawn.copy())
    odd[0, 0] = (1, 2, 3)
    save(tmp_path / "odd.png", odd)
    with pytest.raises(DataError, match=r"odd\.png.*\(1, 2, 3\)"):
        load_label_file(tmp_path / "odd.png", cfg)


def test_coco_stuff_sample(coco_root):
    cfg = dataset_cfg("coco-stuff", coco_root)
    assert cfg.label_nc == 182 and cfg.contain_dontcare and cfg.use_instance
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert (len(train), len(val)) == (13, 8)
    raw = None
    for index, pair in enumerate(val.pairs):
        raw = np.asarray(Image.open(pair.label))
        if (raw == 255).any():
            break
    assert raw is not None and (raw == 255).any(), "expected unlabelled pixels in the sample"
    label = load_label_file(pair.label, cfg).numpy()
    assert np.array_equal(label == 182, raw == 255)
    assert np.array_equal(label[raw != 255], raw[raw != 255])
    sample = val[index]
    assert sample["instance"].dtype == torch.int32 and sample["instance"].shape == (64, 64)
    assert int(sample["label"].max()) <= 182


# ----------------------------------------------------------------------------- fabricated trees

def make_cityscapes(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, cities in (("train", ("aachen", "bonn")), ("val", ("frankfurt",))):
        for city in cities:
            for n in range(2):
                stem = f"{city}_{n:06d}_000019"
                save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", photo(16, 32, n))
                gt = root / "gtFine" / split / city
                label = rng.integers(0, 34, (16, 32)).astype(np.uint8)
                save(gt / f"{stem}_gtFine_labelIds.png", label)
                instance = label.astype(np.uint16)
                instance[:8] = 26000 + n                       # a car instance, id > 255
                save(gt / f"{stem}_gtFine_instanceIds.png", instance)
                save(gt / f"{stem}_gtFine_color.png", photo(16, 32, 9))
                (gt / f"{stem}_gtFine_polygons.json").write_text("{}")


def test_cityscapes_tree(tmp_path):
    make_cityscapes(tmp_path)
    cfg = dataset_cfg("cityscapes", tmp_path, load_size=64, crop_size=64)
    assert cfg.label_nc == 35 and cfg.use_instance and not cfg.contain_dontcare
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert (len(train), len(val)) == (4, 2)
    assert train.pairs[0].key == "aachen/aachen_000000_000019"
    sample = val[1]
    assert sample["image"].shape == (3, 32, 64)                       # aspect ratio 2
    assert sample["instance"].dtype == torch.int32
    assert int(sample["instance"][:16].min()) == 26001                 # kept beyond 8 bits
    assert int(sample["label"].max()) < 35
    assert class_names(cfg)[7] == "road" and len(class_names(cfg)) == 35


def make_ade20k(root: Path) -> None:
    base = root / "ADEChallengeData2016"
    for split, folder, count in (("train", "training", 3), ("val", "validation", 2)):
        for n in range(count):
            stem = f"ADE_{split}_{n + 1:08d}"
            save(base / "images" / folder / f"{stem}.jpg", photo(20, 24, n))
            annotation = np.zeros((20, 24), dtype=np.uint8)          # 0 = don't-care
            annotation[:, 8:16] = 1
            annotation[:, 16:] = 150
            save(base / "annotations" / folder / f"{stem}.png", annotation)


@pytest.mark.parametrize("use_inner_folder", [False, True])
def test_ade20k_tree(tmp_path, use_inner_folder):
    make_ade20k(tmp_path)
    root = tmp_path / "ADEChallengeData2016" if use_inner_folder else tmp_path
    cfg = dataset_cfg("ade20k", root)
    assert cfg.label_nc == 150 and cfg.contain_dontcare
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert (len(train), len(val)) == (3, 2)
    label = load_label_file(val.pairs[0].label, cfg).numpy()
    assert (label[:, :8] == 150).all() and (label[:, 8:16] == 0).all() and (label[:, 16:] == 149).all()
    assert set(val[0]["label"].unique().tolist()) == {0, 149, 150}


def test_ade20k_value_beyond_150(tmp_path):
    make_ade20k(tmp_path)
    bad = tmp_path / "ADEChallengeData2016" / "annotations" / "validation" / "ADE_val_00000001.png"
    annotation = np.asarray(Image.open(bad)).copy()
    annotation[0, 0] = 151
    save(bad, annotation)
    cfg = dataset_cfg("ade20k", tmp_path)
    dataset = build_dataset(cfg, "val")
    with pytest.raises(DataError, match=r"ADE_val_00000001\.png.*label value 151 .*--label-nc 151"):
        dataset[0]


# ----------------------------------------------------------------------------- folder format

def make_folder(base: Path, names=("a", "b", "sub/c"), value_range=5, dont_care=None) -> None:
    rng = np.random.default_rng(3)
    for n, name in enumerate(names):
        save(base / "images" / f"{name}.jpg", photo(24, 20, n))
        label = rng.integers(0, value_range, (24, 20)).astype(np.uint8)
        if dont_care is not None:
            label[:4] = dont_care
        save(base / "labels" / f"{name}.png", label)
        save(base / "instances" / f"{name}.png", (label.astype(np.int32) * 10).astype(np.uint8))


def test_folder_flat_layout_needs_a_split(tmp_path):
    """A flat root used to serve as both train and val (validation on the training images);
    now it is an error that names both fixes, and data.val_fraction holds out a fixed share."""
    make_folder(tmp_path, names=("a", "b", "sub/c", "d", "e"), dont_care=255)
    cfg = DataConfig(dataset="folder", root=str(tmp_path), label_nc=5, contain_dontcare=True, dont_care_value=255,
                     use_instance=True, load_size=24, crop_size=16)
    with pytest.raises(DataError, match=r"no train/ and val/ subfolders.*train/\{images,labels\}.*data\.val_fraction"):
        build_dataset(cfg, "train")
    cfg = replace(cfg, val_fraction=0.4)
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    train_keys, val_keys = [p.key for p in train.pairs], [p.key for p in val.pairs]
    assert sorted(train_keys + val_keys) == ["a", "b", "d", "e", "sub/c"] and val_keys
    assert not set(train_keys) & set(val_keys)
    assert [p.key for p in build_dataset(cfg, "val").pairs] == val_keys          # deterministic
    index = val_keys.index("sub/c") if "sub/c" in val_keys else None
    sample = (val if index is not None else train)[index if index is not None else train_keys.index("sub/c")]
    assert int(sample["label"].max()) == 5      # 255 -> label_nc
    raw_value = torch.where(sample["label"] == 5, torch.tensor(255), sample["label"])
    assert torch.equal(sample["instance"], (raw_value * 10 % 256).int())
    raw = np.asarray(Image.open(tmp_path / "labels" / "sub" / "c.png"))
    label = load_label_file(tmp_path / "labels" / "sub" / "c.png", cfg).numpy()
    assert np.array_equal(label, np.where(raw == 255, 5, raw))


@pytest.mark.parametrize("layout", ["split_first", "split_inside"])
def test_folder_split_layouts(tmp_path, layout):
    for split, names in (("train", ("t1", "t2", "t3")), ("val", ("v1",))):
        if layout == "split_first":
            make_folder(tmp_path / split, names)
        else:
            make_folder(tmp_path / "tmp", names)
            for kind in ("images", "labels", "instances"):
                (tmp_path / kind).mkdir(exist_ok=True)
                (tmp_path / "tmp" / kind).rename(tmp_path / kind / split)
    cfg = DataConfig(dataset="folder", root=str(tmp_path), label_nc=5, load_size=24, crop_size=16)
    assert [p.key for p in list_pairs(cfg, "train")] == ["t1", "t2", "t3"]
    assert [p.key for p in list_pairs(cfg, "val")] == ["v1"]
    assert build_dataset(cfg, "val")[0]["image"].shape == (3, 16, 16)


def test_folder_dont_care_needs_its_channel(tmp_path):
    make_folder(tmp_path / "train", dont_care=255)
    make_folder(tmp_path / "val", dont_care=255)
    from spade_bench.errors import ConfigError
    cfg = DataConfig(dataset="folder", root=str(tmp_path), label_nc=5, dont_care_value=255)
    with pytest.raises(ConfigError, match="contain_dontcare"):
        build_dataset(cfg, "train")
    # Without declaring 255 at all, the value is out of range and the message says how to fix it.
    dataset = build_dataset(replace(cfg, dont_care_value=None), "train")
    with pytest.raises(DataError, match=r"a\.png.*label value 255 .*--label-nc 256.*--dont-care 255"):
        dataset[0]


def test_missing_root_is_named(tmp_path):
    cfg = DataConfig(dataset="folder", root=str(tmp_path / "nowhere"), label_nc=5)
    with pytest.raises(DataError, match="nowhere"):
        build_dataset(cfg, "train")
