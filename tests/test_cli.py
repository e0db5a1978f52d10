"""The command line starts light: `--help`, `config` and `variants` load neither torch nor numpy
(config validation reads the name and format tables without importing what they name)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "numpy", "matplotlib", "PIL")

SCRIPT = textwrap.dedent("""
    import io, json, sys, contextlib
    from cli import app
    args = json.loads(sys.argv[1])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = app(args, standalone_mode=False, prog_name="spade-bench")
    print(json.dumps({"code": code, "output": out.getvalue(), "modules": sorted(sys.modules)}))
""")


def run_cli(*args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="250")   # help text on one line per option
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(list(args))], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("args, expect", [
    (["--help"], "Train, evaluate and compare"),
    (["train", "--help"], "Dataset format: ade20k, cityscapes, coco-stuff, facades, folder, synthetic"),
    (["data", "check", "--help"], "--dataset"),
    (["config", "--preset", "smoke"], '"crop_size": 64'),
    (["config", "--variant", "clade", "--dataset", "cityscapes", "--root", "/nowhere", "--set", "generator.ngf=8"],
     '"num_upsampling_layers": "more"'),
    (["variants"], "spade-gamma"),
])
def test_light_commands_import_neither_torch_nor_numpy(args, expect):
    result = run_cli(*args)
    assert result["code"] in (None, 0), result["output"]
    assert expect in result["output"]
    loaded = {m.split(".")[0] for m in result["modules"]}
    assert not loaded & set(HEAVY), f"`spade-bench {' '.join(args)}` imported {sorted(loaded & set(HEAVY))}"


def test_the_harness_sees_a_command_that_loads_torch():
    """The same subprocess reports torch when a command does load it, so the test above can fail."""
    result = run_cli("data", "check", "--dataset", "synthetic", "--set", "data.synthetic_train_size=2",
                     "--set", "data.synthetic_val_size=2", "--set", "data.crop_size=32", "--set", "data.load_size=32")
    assert "no problems found" in result["output"]
    assert {"torch", "numpy"} <= {m.split(".")[0] for m in result["modules"]}
