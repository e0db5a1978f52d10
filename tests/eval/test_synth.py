"""`spade-bench synth` on a run trained with instance maps (issue 21: class boundaries silently stood
in for instance edges). It takes the label map's instance map (--instance), or says what it uses."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from typer.testing import CliRunner

from cli import app
from spade_bench.config import resolve, save_config
from spade_bench.trainer import Trainer

TINY = ["generator.ngf=8", "generator.spade_hidden=16", "discriminator.ndf=8", "loss.perceptual=none",
        "data.crop_size=32", "data.load_size=32", "data.use_instance=true"]


def test_synth_takes_an_instance_map_or_says_class_boundaries_stand_in(tmp_path, monkeypatch):
    cfg = resolve("spade", preset="smoke", overrides=TINY)
    run = tmp_path / "run"
    Trainer(cfg, run, device=torch.device("cpu"), progress=False, with_data=False).save()
    save_config(cfg, run / "config.json")
    label = np.zeros((32, 32), np.uint8)
    label[:, 8:24] = 3                                          # one region of class 3 ...
    instance = label.astype(np.int32) * 1000
    instance[:, 16:24] += 1                                     # ... that is two touching objects
    Image.fromarray(label).save(tmp_path / "label.png")
    Image.fromarray(instance.astype(np.uint16)).save(tmp_path / "instance.png")
    import eval.synth

    seen = []
    real_render = eval.synth.render
    monkeypatch.setattr(eval.synth, "render", lambda generator, segmap, *a, **k: (
        seen.append(segmap[0, -1].clone()), real_render(generator, segmap, *a, **k))[1])
    base = ["synth", "--run", str(run), "--label", str(tmp_path / "label.png"), "--device", "cpu"]

    guessed = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "guessed.png")])
    assert guessed.exit_code == 0, guessed.output
    assert "class boundaries stand in for instance edges" in guessed.stderr and "--instance" in guessed.stderr
    given = CliRunner().invoke(app, [*base, "--instance", str(tmp_path / "instance.png"),
                                     "--out", str(tmp_path / "given.png")])
    assert given.exit_code == 0, given.output
    assert "class boundaries" not in given.output
    # The generator's instance-edge channel: the edge between the two objects only with --instance.
    guessed_edges, given_edges = seen
    assert not guessed_edges[:, 14:18].any() and given_edges[:, 15:17].all()
