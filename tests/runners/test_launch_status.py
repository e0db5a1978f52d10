"""A local job that died without a result (killed, out of memory) is shown as failed by
--status, and --collect records it as failed in the run folder and in the report."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from cli import app
from runners.ablate import mark_failed, metrics_to_score, pair_is_done, plan_sweep
from spade_bench.run_folder import read_json_or_empty
from runners.launch import LaunchOptions, _new_manifest, launch, manifest_path, pair_statuses, plan_lines
from spade_bench.config import config_hash, save_config
from spade_bench.errors import ConfigError
from spade_bench.io import atomic_write_json
from spade_bench.metrics import get_metric, list_metrics

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


def _local_sweep(tmp_path, steps: int = 4):
    sweep = plan_sweep(variants=("spade",), seeds=(0,), preset="smoke", out=tmp_path / "runs",
                       report_out=tmp_path / "report", overrides=TINY[:1] + [f"train.steps={steps}",
                                                                             "train.decay_steps=1"],
                       device="cpu")
    run_dir = sweep.run_dir("spade", 0)
    save_config(sweep.configs[("spade", 0)], run_dir / "config.json")
    atomic_write_json(manifest_path(sweep.out), _new_manifest(sweep, LaunchOptions(launcher="local")))
    return sweep, run_dir


def test_status_calls_a_pair_finished_by_the_rule_a_relaunch_skips_it_by(tmp_path):
    """Scores of the final step under another config (here: the run was later relaunched with
    other settings) are not "finished": a relaunch retrains that pair (pair_is_done)."""
    sweep, run_dir = _local_sweep(tmp_path)
    cfg = sweep.configs[("spade", 0)]
    atomic_write_json(run_dir / "train_summary.json", {"status": "finished", "step": 4})
    other = replace(cfg, optim=replace(cfg.optim, lr=cfg.optim.lr * 2))
    # Every registered metric scored at this code's version (a pair lacking one is not done: below).
    metrics = {"checkpoint_step": 4, "run": {"config_hash": config_hash(other)},
               "metrics": {m.name: 2.0 for m in list_metrics()} | {"fid": 1.0},
               "protocol": {"metric_versions": {m.name: m.version_string() for m in list_metrics()}}}
    atomic_write_json(run_dir / "eval" / "metrics.json", metrics)
    assert sweep.todo() == [("spade", 0)]
    assert pair_statuses(sweep.out)[0].state != "finished"

    metrics["run"]["config_hash"] = config_hash(cfg)
    atomic_write_json(run_dir / "eval" / "metrics.json", metrics)
    assert sweep.todo() == []
    st = pair_statuses(sweep.out)[0]
    assert (st.state, st.detail) == ("finished", "fid 1, miou 2")
    assert plan_lines(sweep, LaunchOptions(launcher="local"))[0].startswith("spade seed 0: already finished")


def test_a_pair_lacking_a_metric_or_holding_an_old_version_is_scored_for_those_only(tmp_path):
    """A metric added after a sweep was scored (or whose version was bumped) used to leave the
    pair "finished": a relaunch skipped it and the report's column stayed "-". Now the pair
    is "partly scored" and a relaunch scores exactly what it lacks, keeping the rest."""
    sweep, run_dir = _local_sweep(tmp_path)
    cfg = sweep.configs[("spade", 0)]
    atomic_write_json(run_dir / "train_summary.json", {"status": "finished", "step": 4})
    names = [m.name for m in list_metrics()]
    new, bumped = names[-1], names[0]
    versions = {m.name: m.version_string() for m in list_metrics() if m.name != new}
    versions[bumped] = versions[bumped].replace(get_metric(bumped).version, "old-family/0")
    atomic_write_json(run_dir / "eval" / "metrics.json", {
        "checkpoint_step": 4, "run": {"config_hash": config_hash(cfg)},
        "metrics": {name: 1.0 for name in names if name != new}, "protocol": {"metric_versions": versions}})
    assert not pair_is_done(run_dir, cfg) and sweep.todo() == [("spade", 0)]
    assert metrics_to_score(run_dir, cfg) == {bumped: f"scored with old-family/0, now {get_metric(bumped).version}",
                                              new: "not scored"}
    st = pair_statuses(sweep.out)[0]
    assert st.state == "partly scored" and f"{new} (not scored)" in st.detail and bumped in st.detail
    line = plan_lines(sweep, LaunchOptions(launcher="local"))[0]
    assert line.startswith(f"spade seed 0: trained; scores {bumped}, {new} only")


def test_bad_json_records_read_as_empty(tmp_path):
    sweep, run_dir = _local_sweep(tmp_path)
    cfg = sweep.configs[("spade", 0)]
    (run_dir / "eval").mkdir()
    for text in ("[1, 2]", "{not json", '{"checkpoint_step": 4, "run": "x"}', "\xff\xfe"):
        (run_dir / "eval" / "metrics.json").write_bytes(text.encode("latin-1"))
        (run_dir / "train_summary.json").write_bytes(text.encode("latin-1"))
        assert read_json_or_empty(run_dir / "eval" / "metrics.json") == ({"checkpoint_step": 4, "run": "x"}
                                                                 if text.startswith('{"') else {})
        assert not pair_is_done(run_dir, cfg)
        assert pair_statuses(sweep.out)[0].state == "pending"
    mark_failed(run_dir, "boom")
    assert read_json_or_empty(run_dir / "train_summary.json") == {"status": "failed", "error": "boom"}


def test_launch_refuses_the_inline_launcher(tmp_path):
    sweep, _ = _local_sweep(tmp_path)
    with pytest.raises(ConfigError, match="not --launcher inline.*run_ablation"):
        launch(sweep, LaunchOptions(launcher="inline"))
