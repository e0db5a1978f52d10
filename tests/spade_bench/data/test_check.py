"""`spade-bench data check` and the lazy per-sample checks: every bad file is named with its
reason, and the exit code is non-zero."""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cli import app
from spade_bench.config import DataConfig
from spade_bench.data import build_dataset, check_dataset
from spade_bench.errors import DataError

runner = CliRunner()


def facades_copy(facades_root: Path, tmp_path: Path, count: int = 6) -> Path:
    """The first `count` CMP Facades pairs (train: all but the last; val: the last one)."""
    root = tmp_path / "facades"
    (root / "base").mkdir(parents=True)
    shutil.copy(facades_root / "label_names.txt", root)
    for n in range(1, count + 1):
        for suffix in (".jpg", ".png"):
            shutil.copy(facades_root / "base" / f"cmp_b{n:04d}{suffix}", root / "base")
    return root


def set_label_value(path: Path, value: int) -> None:
    label = Image.open(path)
    array = np.asarray(label).copy()
    array[5, 5] = value
    fixed = Image.fromarray(array)
    palette = label.getpalette()
    fixed.putpalette(palette + [0] * (768 - len(palette)))           # a short palette would drop bits
    fixed.save(path)
    assert np.asarray(Image.open(path))[5, 5] == value


def check(*args: str):
    return runner.invoke(app, ["data", "check", *args])


def test_real_facades_pass(facades_root):
    result = check("--dataset", "facades", "--root", str(facades_root))
    assert result.exit_code == 0, result.output
    assert "378 pairs (train 300, val 78)" in result.output
    assert "12 classes present" in result.output
    assert "no problems found" in result.output


def test_clean_copy_passes_and_summarises(facades_root, tmp_path):
    root = facades_copy(facades_root, tmp_path)
    report = check_dataset(DataConfig(dataset="facades", root=str(root), label_nc=13))
    assert report.ok and report.pairs == {"train": 5, "val": 1} and report.num_pairs == 6
    assert report.classes_present and all(1 <= c <= 12 for c in report.classes_present)
    assert report.class_pixels.sum() == sum(w * h for (w, h), n in report.sizes.items() for _ in range(n))
    assert "facade" in report.summary()


def test_corrupted_copy_names_every_bad_file(facades_root, tmp_path):
    root = facades_copy(facades_root, tmp_path)
    base = root / "base"
    set_label_value(base / "cmp_b0002.png", 200)                      # value outside 0..12
    (base / "cmp_b0003.png").unlink()                                 # image without its label
    data = (base / "cmp_b0004.jpg").read_bytes()
    (base / "cmp_b0004.jpg").write_bytes(data[: len(data) // 2])       # truncated JPEG
    (base / "cmp_b0005.jpg").unlink()                                 # label without its image
    label = Image.open(base / "cmp_b0006.png")
    label.resize((label.width // 2, label.height)).save(base / "cmp_b0006.png")   # sizes differ

    result = check("--dataset", "facades", "--root", str(root))
    assert result.exit_code != 0
    out = result.output
    assert "5 problem(s)" in out
    bad_value = next(line for line in out.splitlines() if "cmp_b0002.png" in line)
    assert "label value 200" in bad_value and "--label-nc 201" in bad_value and "--dont-care 200" in bad_value
    assert "cmp_b0003.jpg: image without its label" in out
    truncated = next(line for line in out.splitlines() if "cmp_b0004.jpg" in line)
    assert "truncated" in truncated
    assert "cmp_b0005.png: label map without its image" in out
    sizes = next(line for line in out.splitlines() if "cmp_b0006" in line)
    assert "cmp_b0006.jpg" in sizes and "cmp_b0006.png" in sizes and "must match" in sizes
    assert "cmp_b0001" not in out.split("problem(s)")[1]                # the good pair is not listed


def test_flags_that_fix_a_bad_value(facades_root, tmp_path):
    root = facades_copy(facades_root, tmp_path, count=3)
    set_label_value(root / "base" / "cmp_b0001.png", 200)
    assert check("--dataset", "facades", "--root", str(root)).exit_code != 0
    assert check("--dataset", "facades", "--root", str(root), "--label-nc", "201").exit_code == 0
    fixed = check("--dataset", "facades", "--root", str(root), "--dont-care", "200")
    assert fixed.exit_code == 0, fixed.output
    assert "don't-care (index 13)" in fixed.output


def test_training_runs_the_same_checks_lazily(facades_root, tmp_path):
    root = facades_copy(facades_root, tmp_path)
    base = root / "base"
    set_label_value(base / "cmp_b0002.png", 200)
    data = (base / "cmp_b0004.jpg").read_bytes()
    (base / "cmp_b0004.jpg").write_bytes(data[: len(data) // 2])
    cfg = replace(DataConfig(dataset="facades", root=str(root), label_nc=13), load_size=72, crop_size=64)
    train = build_dataset(cfg, "train")
    train[0]                                                           # a good pair loads
    with pytest.raises(DataError, match=r"cmp_b0002\.png: label value 200 .*--label-nc 201"):
        train[1]
    with pytest.raises(DataError, match=r"cmp_b0004\.jpg: cannot read image .*truncated"):
        train[3]
    # A missing file stops the run before the first batch, with the message `data check` prints.
    (base / "cmp_b0003.png").unlink()
    with pytest.raises(DataError, match=r"cmp_b0003\.jpg: image without its label"):
        build_dataset(cfg, "train")


def test_corrupt_label_png(facades_root, tmp_path):
    root = facades_copy(facades_root, tmp_path, count=3)
    (root / "base" / "cmp_b0002.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    result = check("--dataset", "facades", "--root", str(root))
    assert result.exit_code != 0
    assert "cmp_b0002.png: cannot read label map" in result.output


def test_empty_dataset(tmp_path):
    (tmp_path / "facades" / "base").mkdir(parents=True)
    result = check("--dataset", "facades", "--root", str(tmp_path / "facades"))
    assert result.exit_code != 0 and "empty dataset" in result.output
    for split in ("train", "val"):
        (tmp_path / "user" / split / "images").mkdir(parents=True)
        (tmp_path / "user" / split / "labels").mkdir(parents=True)
    result = check("--dataset", "folder", "--root", str(tmp_path / "user"), "--label-nc", "4")
    assert result.exit_code != 0 and "empty dataset" in result.output
    with pytest.raises(DataError, match="no train pairs"):
        build_dataset(DataConfig(dataset="folder", root=str(tmp_path / "user"), label_nc=4), "train")


def test_missing_root_and_folder_layout(tmp_path):
    result = check("--dataset", "folder", "--root", str(tmp_path / "absent"))
    assert result.exit_code != 0 and "absent" in result.output
    result = check("--dataset", "folder", "--root", str(tmp_path))
    assert result.exit_code != 0 and "images" in result.output


def test_synth_output_checks_clean(tmp_path):
    assert runner.invoke(app, ["data", "synth", "--out", str(tmp_path), "--n", "3", "--size", "32"]).exit_code == 0
    assert runner.invoke(app, ["data", "synth", "--out", str(tmp_path), "--n", "1", "--size", "32",
                               "--split", "val"]).exit_code == 0
    result = check("--dataset", "folder", "--root", str(tmp_path), "--label-nc", "10")
    assert result.exit_code == 0, result.output
    assert "4 pairs" in result.output and "sky" in result.output
