"""Ablation runner: a failed pair is recorded and reported, a re-run skips finished pairs
and retries the failed one."""
from __future__ import annotations

import json

from typer.testing import CliRunner

import spade_bench.trainer as trainer_module
from cli import app
from runners.ablate import pair_dir, pair_is_done
from spade_bench.config import apply_overrides, config_hash, resolve, save_config, to_dict
from spade_bench.errors import TrainingError
from spade_bench.io import atomic_write_json

TINY = ["generator.ngf=8", "generator.spade_hidden=8", "discriminator.ndf=8", "discriminator.n_layers=2",
        "loss.perceptual=none", "train.batch_size=2", "train.steps=2", "train.decay_steps=1",
        "train.log_every=1", "train.checkpoint_every=2", "data.synthetic_train_size=8",
        "data.synthetic_val_size=4", "data.max_val_images=4", "eval.batch_size=4", "eval.kid_subsets=2"]


def ablate_args(tmp_path):
    args = ["ablate", "--preset", "smoke", "--variants", "spade,concat", "--seeds", "0",
            "--out", str(tmp_path / "runs"), "--report", str(tmp_path / "report"), "--segmenter-steps", "2",
            "--device", "cpu"]
    for item in TINY:
        args += ["--set", item]
    return args


def test_failed_pair_is_reported_then_rerun_skips_finished_pairs(tmp_path, monkeypatch):
    real_train_run = trainer_module.train_run

    def concat_crashes(cfg, run_dir, **kwargs):
        if cfg.variant == "concat":
            raise TrainingError("non-finite loss G/gan at step 1 (simulated)")
        return real_train_run(cfg, run_dir, **kwargs)

    monkeypatch.setattr(trainer_module, "train_run", concat_crashes)
    first = CliRunner().invoke(app, ablate_args(tmp_path))
    assert first.exit_code == 1, first.output
    assert "1/2 pairs finished" in first.output and "failed: concat seed 0" in first.output
    summary = json.loads((tmp_path / "runs" / "concat-s0" / "train_summary.json").read_text())
    assert summary["status"] == "failed" and "simulated" in summary["error"]
    report = (tmp_path / "report" / "ablation.md").read_text()
    assert "concat" in report and "failed" in report and "simulated" in report
    spade_ckpt = tmp_path / "runs" / "spade-s0" / "checkpoints" / "latest.pt"
    spade_metrics = tmp_path / "runs" / "spade-s0" / "eval" / "metrics.json"
    stamps = (spade_ckpt.stat().st_mtime_ns, spade_metrics.stat().st_mtime_ns)

    monkeypatch.setattr(trainer_module, "train_run", real_train_run)
    second = CliRunner().invoke(app, ablate_args(tmp_path))
    assert second.exit_code == 0, second.output
    assert "2/2 pairs finished" in second.output
    # The finished pair was skipped: neither its checkpoint nor its metrics were rewritten.
    assert (spade_ckpt.stat().st_mtime_ns, spade_metrics.stat().st_mtime_ns) == stamps
    metrics = json.loads((tmp_path / "runs" / "concat-s0" / "eval" / "metrics.json").read_text())
    assert metrics["checkpoint_step"] == 2 and metrics["run"]["variant"] == "concat"
    assert "failed" not in json.loads((tmp_path / "runs" / "concat-s0" / "train_summary.json").read_text())["status"]


def test_a_pair_scored_by_older_code_stays_finished(tmp_path, add_config_field, old_config_hash):
    """A metrics.json written before config_hash skipped default values records the older rule's
    hash: the pair stays finished, also once the schema gains a field, and only for its own
    experiment (a relaunch skips what pair_is_done calls finished)."""
    cfg = resolve("spade", preset="smoke", overrides=TINY)
    run_dir = pair_dir(tmp_path, "spade", 0)
    save_config(cfg, run_dir / "config.json")
    from spade_bench.metrics import list_metrics
    metrics = {"checkpoint_step": cfg.train.steps, "run": {"config_hash": old_config_hash(to_dict(cfg))},
               "metrics": {m.name: 1.0 for m in list_metrics()},
               "protocol": {"metric_versions": {m.name: m.version_string() for m in list_metrics()}}}
    atomic_write_json(run_dir / "eval" / "metrics.json", metrics)
    assert metrics["run"]["config_hash"] != config_hash(cfg)
    assert pair_is_done(run_dir, cfg)

    key = add_config_field()
    now = resolve("spade", preset="smoke", overrides=TINY)
    assert pair_is_done(run_dir, now)
    assert not pair_is_done(run_dir, apply_overrides(now, ["optim.lr=0.001"]))
    assert not pair_is_done(run_dir, apply_overrides(now, [f"{key}=3"]))
    assert not pair_is_done(run_dir, apply_overrides(now, ["train.steps=3"]))
    # Scores of another experiment: the hash they record names no config this run saved.
    other = apply_overrides(cfg, ["optim.lr=0.001"])
    atomic_write_json(run_dir / "eval" / "metrics.json",
                      {**metrics, "run": {"config_hash": old_config_hash(to_dict(other))}})
    assert not pair_is_done(run_dir, now)


def test_a_trained_pair_lacking_metrics_is_scored_for_those_only(tmp_path, monkeypatch):
    """A metric added after a sweep was scored: the relaunch neither retrains nor skips the pair,
    it asks the harness for exactly the missing metrics (the harness keeps the others)."""
    import runners.ablate as ablate
    from spade_bench.config import config_hash
    from spade_bench.io import atomic_write_json
    from spade_bench.metrics import list_metrics

    sweep = ablate.plan_sweep(variants=("spade",), seeds=(0,), preset="smoke", out=tmp_path / "runs",
                              overrides=TINY, device="cpu")
    cfg, run_dir = sweep.configs[("spade", 0)], sweep.run_dir("spade", 0)
    newest = [m.name for m in list_metrics()][-2:]
    record = {"checkpoint_step": cfg.train.steps, "run": {"config_hash": config_hash(cfg)},
              "metrics": {m.name: 1.0 for m in list_metrics() if m.name not in newest},
              "protocol": {"metric_versions": {m.name: m.version_string() for m in list_metrics()
                                               if m.name not in newest}}}
    atomic_write_json(run_dir / "eval" / "metrics.json", record)
    calls = []

    def never_train(*args, **kwargs):
        raise AssertionError("a trained pair was trained again")

    monkeypatch.setattr(ablate, "_trained", lambda run_dir, cfg: True)
    monkeypatch.setattr(trainer_module, "train_run", never_train)
    monkeypatch.setattr(ablate, "evaluate_run", lambda run_dir, *, metric, **kwargs: calls.append(metric))
    assert ablate.run_pair(cfg, run_dir, tmp_path / "seg.pt", "cpu") == "finished"
    assert calls == [",".join(newest)]
    record["metrics"].update(dict.fromkeys(newest, 0.5))
    record["protocol"]["metric_versions"] = {m.name: m.version_string() for m in list_metrics()}
    atomic_write_json(run_dir / "eval" / "metrics.json", record)
    assert ablate.run_pair(cfg, run_dir, tmp_path / "seg.pt", "cpu") == "done" and len(calls) == 1
