"""A user's own data end to end: don't-care labels in grids and checkpoints, `data check`
suggestions that `train` accepts unchanged, and the errors on the way."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from own_data import LABEL_NC, VOID, make_folder_dataset
from spade_bench import checkpoint as ckpt
from spade_bench.config import RunConfig, resolve, with_dataset
from spade_bench.data import colorize_labels, dataset_palette
from spade_bench.trainer import Trainer

TINY = [
    "generator.ngf=8", "generator.spade_hidden=16", "discriminator.ndf=8", "discriminator.n_layers=2",
    "loss.perceptual=none", "train.batch_size=2", "data.crop_size=32", "data.load_size=36",
    "train.log_every=1", "data.num_workers=0",
]


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


def test_dont_care_run_draws_grids_and_keeps_checkpoints(tmp_path):
    """Defect 1: every run with a don't-care label crashed on its first sample grid, before
    that step's checkpoint was written."""
    root = make_folder_dataset(tmp_path / "street", n_train=4, n_val=2)
    cfg = resolve("spade", preset="smoke", dataset="folder", root=str(root), overrides=TINY + [
        f"data.label_nc={LABEL_NC}", f"data.dont_care_value={VOID}", "data.contain_dontcare=true",
        "train.steps=2", "train.decay_steps=1", "train.sample_every=1", "train.checkpoint_every=1"])
    run = tmp_path / "run"
    Trainer(cfg, run, progress=False).fit()
    assert (run / "samples" / "step_0000001.png").is_file() and (run / "samples" / "step_0000002.png").is_file()
    assert ckpt.load_checkpoint(ckpt.latest_path(run))["step"] == 2
