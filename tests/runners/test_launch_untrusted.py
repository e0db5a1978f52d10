"""Issue 21: a sweep folder is untrusted input. `ablate --status/--collect` took the sweep's state
from submitit's result pickles at a path sweep.json chose (a crafted sweep folder ran code), wrote
failure marks into any run_dir it named, and a malformed sweep.json was a traceback. Now the state
comes from the project's own JSON, sweep.json is checked, and run folders are always OUT's own."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cli import app
from runners.ablate import plan_sweep
from runners.launch import LaunchOptions, _new_manifest, manifest_path
from spade_bench.config import save_config
from spade_bench.io import atomic_write_json

TINY = ["generator.ngf=8", "train.steps=4", "train.decay_steps=1"]


def _local_sweep(tmp_path):
    sweep = plan_sweep(variants=("spade",), seeds=(0,), preset="smoke", out=tmp_path / "runs",
                       report_out=tmp_path / "report", overrides=TINY, device="cpu")
    run_dir = sweep.run_dir("spade", 0)
    save_config(sweep.configs[("spade", 0)], run_dir / "config.json")
    atomic_write_json(manifest_path(sweep.out), _new_manifest(sweep, LaunchOptions(launcher="local")))
    return sweep, run_dir


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def _crafted_sweep(tmp_path, **changes):
    """A sweep folder someone handed over: its sweep.json edited (local launcher, a dead job)."""
    sweep, run_dir = _local_sweep(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    manifest = json.loads(manifest_path(sweep.out).read_text())
    manifest["pairs"][0]["job_id"] = str(dead.pid)
    for key, value in changes.items():
        manifest[key] = value
    manifest_path(sweep.out).write_text(json.dumps(manifest))
    return sweep, run_dir, manifest


def test_status_and_collect_never_unpickle_what_sweep_json_points_at(tmp_path):
    """At 6b04d6e `ablate --status/--collect` unpickled submitit's result file in jobs_folder, a path
    sweep.json may point anywhere: a crafted sweep folder ran code."""
    import pickle

    marker = tmp_path / "payload-ran"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    sweep, run_dir, manifest = _crafted_sweep(tmp_path, jobs_folder=str(elsewhere))
    job_id = manifest["pairs"][0]["job_id"]
    for folder in (elsewhere, sweep.out / ".submitit"):
        folder.mkdir(exist_ok=True)
        (folder / f"{job_id}_0_result.pkl").write_bytes(pickle.dumps(("error", _Payload(marker))))
    status = CliRunner().invoke(app, ["ablate", "--status", str(sweep.out)])
    assert status.exit_code == 0, status.output
    collected = CliRunner().invoke(app, ["ablate", "--collect", str(sweep.out)])
    assert collected.exit_code == 0, collected.output
    assert not marker.exists()
    assert "job ended without finishing the pair" in status.output


def test_collect_writes_only_into_the_sweeps_own_run_folders(tmp_path):
    victim = tmp_path / "someone-elses-run"
    victim.mkdir()
    (victim / "train_summary.json").write_text(json.dumps({"status": "running", "step": 7}))
    sweep, run_dir, manifest = _crafted_sweep(tmp_path)
    manifest["pairs"][0]["run_dir"] = str(victim)
    manifest_path(sweep.out).write_text(json.dumps(manifest))
    collected = CliRunner().invoke(app, ["ablate", "--collect", str(sweep.out)])
    assert collected.exit_code == 0, collected.output
    assert json.loads((victim / "train_summary.json").read_text()) == {"status": "running", "step": 7}
    assert json.loads((run_dir / "train_summary.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("edit, named", [
    ({"pairs": "all of them"}, "pairs is not a list"),
    ({"launcher": None}, "launcher None"),
    ({"report_out": 5}, "report_out 5"),
    ({"pairs": [{"variant": "../../etc", "seed": 0}]}, "pairs[0].variant '../../etc'"),
    ({"pairs": [{"variant": "spade", "seed": "0"}]}, "pairs[0].seed '0'"),
    ({"pairs": [{"variant": "spade", "seed": 0, "job_id": "1; rm -rf /"}]}, "pairs[0].job_id"),
])
def test_a_malformed_sweep_json_is_one_line_naming_it(tmp_path, edit, named):
    sweep, _ = _local_sweep(tmp_path)
    manifest = json.loads(manifest_path(sweep.out).read_text())
    manifest.update(edit)
    manifest_path(sweep.out).write_text(json.dumps(manifest))
    for option in ("--status", "--collect"):
        result = CliRunner().invoke(app, ["ablate", option, str(sweep.out)])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert f"{manifest_path(sweep.out)}: {named}" in result.stderr, result.stderr
