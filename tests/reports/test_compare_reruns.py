"""`spade-bench compare` on real (tiny) trainings, the three known-truth cases of issue 18.3:
the same runs are identical; a rerun under another thread count is consistent; a run with a
real change (a much higher learning rate) is inconsistent. CPU, ngf 8, 64x64, a few steps, a
stand-in for the FID Inception network (as tests/eval/test_reproducibility.py does), one
segmenter shared by every run through one cache."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from cli import app

TINY = ["generator.ngf=8", "generator.spade_hidden=8", "discriminator.ndf=8", "discriminator.n_layers=2",
        "loss.perceptual=none", "train.batch_size=2", "train.steps=6", "train.decay_steps=3",
        "train.log_every=3", "train.checkpoint_every=6", "data.synthetic_train_size=8",
        "data.synthetic_val_size=12", "data.max_val_images=12", "eval.batch_size=6", "eval.kid_subsets=4"]


class StubInception(nn.Module):
    """2048-d features from an 8x8 average pool and a fixed random projection (tests/eval/conftest.py)."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("projection", torch.randn(3 * 8 * 8, 2048, generator=generator) / 8)

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, 8).flatten(1) @ self.projection


@pytest.fixture
def ablate(tmp_path, monkeypatch):
    monkeypatch.setattr("eval.fid.load_fid_inception", lambda device="cpu": (StubInception().to(device), "0" * 64))
    monkeypatch.setenv("SPADE_BENCH_CACHE", str(tmp_path / "cache"))

    def run(name, seeds, *extra):
        args = ["ablate", "--preset", "smoke", "--variants", "spade", "--seeds", seeds,
                "--out", str(tmp_path / name), "--report", str(tmp_path / f"{name}-report"),
                "--segmenter-steps", "20", "--device", "cpu"]
        for item in [*TINY, *extra]:
            args += ["--set", item]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        return tmp_path / name

    return run


def _compare(new, reference, *extra):
    out = new.parent / f"{new.name}-compare.json"
    out.unlink(missing_ok=True)
    result = CliRunner().invoke(app, ["compare", str(new), "--reference", str(reference), *extra,
                                      "--json", str(out)])
    return result, (json.loads(out.read_text()) if out.is_file() else None)


def test_compare_known_truth_on_tiny_trainings(ablate):
    reference = ablate("reference", "0,1,2", "train.threads=1")
    report = reference.parent / "reference-report"

    # 1. The same runs, and the report built from them: identical.
    for ref in (reference, report):
        result, answers = _compare(reference, ref)
        assert result.exit_code == 0, result.output
        assert {j["answer"] for j in answers["judgements"]} == {"identical"}

    # 2. Seed 0 again on two threads: other bits, the same experiment. The evaluator trains on
    # the run's thread count too, so the rerun is scored with the reference's (as a user would).
    [segmenter] = (reference.parent / "cache").rglob("*.pt")
    threads = ablate("threads", "0", "train.threads=2", f"eval.segmenter={segmenter}")
    result, answers = _compare(threads, report)
    assert result.exit_code == 0, result.output
    by_metric = {j["metric"]: j for j in answers["judgements"]}
    assert {j["answer"] for j in by_metric.values()} <= {"identical", "consistent"}
    # The thread count changed the bits (so the spread had to judge), not the experiment.
    assert by_metric["fid"]["answer"] == "consistent", result.output
    assert by_metric["fid"]["interval"]["method"] == "pooled seeds (t) + images"

    # 3. A much higher learning rate (250x): refused as another experiment unless named, then
    # inconsistent (FID about +660 against an interval of about +-180 around it, on this machine).
    fast = ablate("fast", "0", "train.threads=1", "optim.lr=0.05")
    result, answers = _compare(fast, report)
    assert result.exit_code == 2 and answers is None
    assert "optim.lr: 0.0002 (reference spade/seed0) vs 0.05 (new spade/seed0)" in result.output
    result, answers = _compare(fast, report, "--allow-diff", "optim.lr")
    assert result.exit_code == 1, result.output
    by_metric = {j["metric"]: j for j in answers["judgements"]}
    assert by_metric["fid"]["answer"] == by_metric["kid"]["answer"] == "inconsistent", result.output
