"""The same command gives the same metrics.json, bit for bit, and the same evaluator identity:
`spade-bench ablate --preset smoke --variants spade --seeds 0` twice, from clean output folders
and clean caches, at the smallest size that still trains a segmenter."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from cli import app

TINY = ["generator.ngf=8", "generator.spade_hidden=8", "discriminator.ndf=8", "discriminator.n_layers=2",
        "loss.perceptual=none", "train.batch_size=2", "train.steps=2", "train.decay_steps=1",
        "train.log_every=1", "train.checkpoint_every=2", "data.synthetic_train_size=4",
        "data.synthetic_val_size=4", "data.max_val_images=4", "eval.batch_size=4", "eval.kid_subsets=4"]


def _ablate(tmp_path, name, monkeypatch):
    monkeypatch.setenv("SPADE_BENCH_CACHE", str(tmp_path / f"cache-{name}"))
    args = ["ablate", "--preset", "smoke", "--variants", "spade", "--seeds", "0",
            "--out", str(tmp_path / name / "runs"), "--report", str(tmp_path / name / "report"),
            "--segmenter-steps", "2", "--device", "cpu"]
    for item in TINY:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads((tmp_path / name / "runs" / "spade-s0" / "eval" / "metrics.json").read_text())


def test_two_clean_runs_give_identical_metrics_and_evaluator_identity(tmp_path, monkeypatch, stub_inception):
    first = _ablate(tmp_path, "a", monkeypatch)
    second = _ablate(tmp_path, "b", monkeypatch)
    # The segmenter was trained twice, into two caches: the same weights, the same identity.
    assert (tmp_path / "cache-a" / "segmenters").is_dir() and (tmp_path / "cache-b" / "segmenters").is_dir()
    assert first["protocol"]["segmenter_sha256"] == second["protocol"]["segmenter_sha256"]
    assert len(first["protocol"]["segmenter_sha256"]) == 64
    for key in ("metrics", "per_class_iou", "references", "label_dependence"):
        assert first.get(key) == second.get(key), key
    assert all(first["metrics"][k] is not None for k in ("fid", "kid", "kid_std", "miou", "pixel_accuracy"))
    assert set(first["code"]) == {"commit", "dirty"}
    assert first["code"] == second["code"]
