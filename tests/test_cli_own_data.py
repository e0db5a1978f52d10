"""Own data on the command line (issue 23): --label-nc/--dont-care on every command that takes a
dataset, and warnings as one plain line each (no Python source path), saying their cost."""
from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def _commands(group, prefix: str = ""):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):      # a sub-typer (typer may vendor its own click)
            yield from _commands(command, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", command


COMMANDS = dict(_commands(typer.main.get_command(app)))


def test_the_walk_finds_the_dataset_commands():
    """The parametrised test below can fail: it sees the commands that take --dataset."""
    with_dataset = {name for name, c in COMMANDS.items() if "--dataset" in {o for p in c.params for o in p.opts}}
    assert {"config", "train", "ablate", "data check", "segmenter train", "import-nvlabs"} <= with_dataset


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_that_takes_a_dataset_takes_the_label_flags(name):
    options = {o for p in COMMANDS[name].params for o in p.opts}
    if "--dataset" in options:
        assert {"--label-nc", "--dont-care"} <= options, f"`spade-bench {name}` takes --dataset but not the label flags"


def test_config_takes_the_label_flags(tmp_path):
    """Issue 23 item 3: `spade-bench config ... --label-nc 11 --dont-care 11` was 'No such option'."""
    result = runner.invoke(app, ["config", "--dataset", "folder", "--root", str(tmp_path), "--label-nc", "11",
                                 "--dont-care", "11"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)["data"]
    assert (data["label_nc"], data["dont_care_value"], data["contain_dontcare"]) == (11, 11, True)


@pytest.mark.parametrize("command", [
    ["config", "--preset", "smoke"],
    ["ablate", "--preset", "smoke", "--variants", "spade", "--dry-run", "--out", "{tmp}/runs"],
])
def test_the_crop_growth_warning_is_one_plain_line_with_its_cost(tmp_path, command):
    """Issue 23 item 4: the smoke preset's crop growth printed a raw UserWarning with its source
    path and line (runners/ablate.py:151) and said nothing of what it costs."""
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    result = runner.invoke(app, [*args, "--dataset", "folder", "--root", str(tmp_path),
                                 "--set", "data.aspect_ratio=1.333"])
    assert result.exit_code == 0, result.output
    warned = [line for line in result.stderr.splitlines() if "crop_size" in line]
    assert len(warned) == 1, result.stderr
    line = warned[0]
    assert line.startswith("warning: preset smoke: data.crop_size 64 -> 128")
    assert "training size 128x96 (W x H) instead of 64x48" in line
    assert "3.0x the pixels of the preset's 64x64" in line and "about 3.0x as long" in line
    assert "UserWarning" not in result.stderr and ".py:" not in result.stderr
