"""A user's own data end to end: don't-care labels in grids and checkpoints, `data check`
suggestions that `train` accepts unchanged, and the errors on the way."""
from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
import torch

from own_data import LABEL_NC, VOID, make_folder_dataset
from spade_bench import checkpoint as ckpt
from spade_bench.config import RunConfig, resolve, with_dataset
from spade_bench.data import colorize_labels, dataset_palette

@pytest.mark.parametrize("dataset", ["ade20k", "coco-stuff", "synthetic", "folder"])
def test_dont_care_gets_its_own_colour(dataset):
    data = with_dataset(RunConfig(), dataset, "/nowhere").data
    if not data.contain_dontcare:
        from dataclasses import replace
        data = replace(data, contain_dontcare=True, dont_care_value=data.label_nc)
    palette = dataset_palette(data)
    assert palette.shape == (data.label_nc + 1, 3)
    assert tuple(palette[-1]) not in {tuple(c) for c in palette[:-1]}
    label = torch.tensor([[0, data.label_nc]])
    drawn = colorize_labels(label, data)
    assert torch.equal(drawn[:, 0, 1], torch.from_numpy(palette[-1]))


def _cli(*args):
    from typer.testing import CliRunner

    from cli import app
    return CliRunner().invoke(app, list(args))


def test_data_check_prints_a_train_command_that_trains(tmp_path):
    """The folder path on a 480x360 set with a void label: `data check` (defaults: label_nc 10)
    reports the bad values, then prints a command that `train` accepts unchanged; the run goes
    through a sample grid and a checkpoint. Also defect 1: any run with a don't-care label
    crashed in its first sample grid (palette one colour short) before its checkpoint."""
    root = make_folder_dataset(tmp_path / "street", n_train=4, n_val=2)
    (root / "label_names.txt").write_text("".join(f"{i} class{i}\n" for i in range(LABEL_NC)) + f"{VOID} void\n")
    result = _cli("data", "check", "--dataset", "folder", "--root", str(root))
    assert result.exit_code != 0 and "label value" in result.output
    assert "raw label values seen: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11" in result.output
    assert "instance maps: none" in result.output
    line = next(ln for ln in result.output.splitlines() if ln.startswith("train with: "))
    command = shlex.split(line[len("train with: "):])
    assert command[:2] == ["spade-bench", "train"]
    assert f"--label-nc {LABEL_NC} --dont-care {VOID}" in line and "data.aspect_ratio=1.333" in line
    again = _cli("data", "check", *command[2:])   # the same flags check clean
    assert again.exit_code == 0, again.output
    run = tmp_path / "run"
    tiny = ["generator.ngf=8", "generator.spade_hidden=16", "discriminator.ndf=8", "discriminator.n_layers=2",
            "loss.perceptual=none", "train.batch_size=2", "train.steps=1", "train.decay_steps=0",
            "data.num_workers=0"]
    trained = _cli(*command[1:], "--preset", "smoke", "--out", str(run), *[a for o in tiny for a in ("--set", o)])
    assert trained.exit_code == 0, trained.output
    assert (run / "samples" / "step_0000001.png").is_file()
    assert ckpt.load_checkpoint(ckpt.latest_path(run))["step"] == 1
    saved = json.loads((run / "config.json").read_text())["data"]
    assert (saved["label_nc"], saved["dont_care_value"], saved["contain_dontcare"]) == (LABEL_NC, VOID, True)
    h, w = saved["crop_size"] / saved["aspect_ratio"], saved["crop_size"]
    assert abs(w / h - 480 / 360) < 0.02        # the smoke preset kept the photos' shape


def test_check_without_names_offers_both_readings(tmp_path):
    root = make_folder_dataset(tmp_path / "street", n_train=2, n_val=1)
    result = _cli("data", "check", "--dataset", "folder", "--root", str(root))
    assert f"--label-nc {LABEL_NC + 1}" in result.output
    assert f"if value {VOID} marks unlabelled pixels instead of a class: " in result.output
    assert f"--label-nc {LABEL_NC} --dont-care {VOID}" in result.output


def test_flat_folder_is_an_error_with_a_fix_and_check_suggests_it(tmp_path):
    """Issue 10: a flat root silently served as both train and val."""
    from spade_bench.data import build_dataset
    from spade_bench.errors import DataError

    root = make_folder_dataset(tmp_path / "flat", n_train=5, splits=False)
    cfg = resolve("spade", dataset="folder", root=str(root), overrides=[f"data.label_nc={LABEL_NC + 1}"])
    with pytest.raises(DataError, match=r"no train/ and val/ subfolders.*data\.val_fraction"):
        build_dataset(cfg.data, "val")
    result = _cli("data", "check", "--dataset", "folder", "--root", str(root))
    assert result.exit_code != 0 and "--set data.val_fraction=0.1" in result.output


def test_bad_own_data_messages(tmp_path):
    from PIL import Image

    from spade_bench.data import build_dataset
    from spade_bench.errors import ConfigError, DataError

    root = make_folder_dataset(tmp_path / "street", n_train=2, n_val=1, size=(48, 32))
    # --dont-care -1 is refused; a don't-care value inside the class range too.
    assert "must be a label value >= 0" in _cli("data", "check", "--dataset", "folder", "--root", str(root),
                                                  "--dont-care", "-1").output
    with pytest.raises(ConfigError, match="--label-nc 5 --dont-care 5"):
        resolve("spade", dataset="folder", root=str(root), overrides=["data.label_nc=11", "data.dont_care_value=5"])
    # With the default label_nc 10, the hint for value 11 is complete: 10 must fit too.
    cfg = resolve("spade", dataset="folder", root=str(root), overrides=["data.crop_size=32", "data.load_size=36"])
    with pytest.raises(DataError, match=r"values 10, 11 .*--label-nc 12 .*--label-nc 11 --dont-care 11"):
        build_dataset(cfg.data, "train")[0]
    # A missing val/ is named as such.
    (root / "val").rename(tmp_path / "val-elsewhere")
    with pytest.raises(DataError, match=r"has train/ but no val/ folder"):
        build_dataset(cfg.data, "val")
    (tmp_path / "val-elsewhere").rename(root / "val")
    # JPEG labels are reported as JPEG labels, not as missing.
    label = root / "train" / "labels" / "train_000.png"
    Image.open(label).convert("L").save(label.with_suffix(".jpg"))
    label.unlink()
    dataset = resolve("spade", dataset="folder", root=str(root),
                      overrides=["data.crop_size=32", "data.load_size=36", "data.label_nc=11",
                                 "data.dont_care_value=11", "data.contain_dontcare=true"]).data
    with pytest.raises(DataError, match=r"train_000\.jpg: label map saved as JPEG.*save label maps as PNG"):
        build_dataset(dataset, "train")[0]
    # A photo with an EXIF rotation whose label was drawn on the rotated view.
    label.with_suffix(".jpg").unlink()
    Image.fromarray(np.zeros((48, 32), np.uint8)).save(label)
    photo = root / "train" / "images" / "train_000.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(photo).save(photo, exif=exif)
    with pytest.raises(DataError, match=r"EXIF orientation.*exif_transpose"):
        build_dataset(dataset, "train")[0]
