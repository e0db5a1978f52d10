"""Sizes on the command line read in one order, W x H (issue 23 item 8: `synth` printed
"96x128 ... 128x96, WxH" in one line)."""
from __future__ import annotations

import re

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def test_synth_prints_every_size_as_width_by_height(tmp_path, make_run):
    _, run = make_run(extra=["data.crop_size=64", "data.aspect_ratio=2"])        # trains at 64x32 (W x H)
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(tmp_path / "label.png")     # a 40x30 label map
    out = tmp_path / "out.png"
    result = runner.invoke(app, ["synth", "--run", str(run), "--label", str(tmp_path / "label.png"),
                                 "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (64, 32)
    sizes = re.findall(r"\d+x\d+", result.stdout)
    assert sizes == ["64x32", "40x30", "64x32"], result.stdout
    assert "64x32 W x H" in result.stdout and "32x64" not in result.stdout
