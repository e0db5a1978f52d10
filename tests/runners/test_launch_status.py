"""A local job that died without a result (killed, out of memory) is shown as failed by
--status, and --collect records it as failed in the run folder and in the report."""
from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from cli import app
from runners.ablate import plan_sweep
from runners.launch import LaunchOptions, _new_manifest, manifest_path
from spade_bench.config import save_config
from spade_bench.io import atomic_write_json

TINY = ["generator.ngf=8", "train.steps=4", "train.decay_steps=1"]


def test_dead_local_job_is_failed_in_status_and_collected_report(tmp_path):
    sweep = plan_sweep(variants=("spade",), seeds=(0,), preset="smoke", out=tmp_path / "runs",
                       report_out=tmp_path / "report", overrides=TINY, device="cpu")
    run_dir = sweep.run_dir("spade", 0)
    save_config(sweep.configs[("spade", 0)], run_dir / "config.json")
    atomic_write_json(run_dir / "train_summary.json", {"status": "running", "step": 0, "steps": 4})
    (run_dir / "logs").mkdir()
    (run_dir / "logs" / "losses.jsonl").write_text('{"step": 1, "G/total": 9.5, "D/total": 2.0}\n')
    dead = subprocess.Popen([sys.executable, "-c", "pass"])   # a controller that is gone
    dead.wait()
    manifest = _new_manifest(sweep, LaunchOptions(launcher="local"))
    manifest["pairs"][0]["job_id"] = str(dead.pid)
    atomic_write_json(manifest_path(sweep.out), manifest)

    status = CliRunner().invoke(app, ["ablate", "--status", str(sweep.out)])
    assert status.exit_code == 0, status.output
    assert status.output.startswith("spade seed 0: failed: job ended without finishing the pair"), status.output

    collected = CliRunner().invoke(app, ["ablate", "--collect", str(sweep.out)])
    assert collected.exit_code == 0, collected.output
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert summary["status"] == "failed" and "job ended without finishing" in summary["error"]
    report = (tmp_path / "report" / "ablation.md").read_text()
    assert "1 runs (0 evaluated, 1 failed)" in report and "job ended without finishing" in report
