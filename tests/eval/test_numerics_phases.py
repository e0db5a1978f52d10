"""One thread count and one numerics mode for every phase of a run: the evaluator's training and a
run's evaluation take them from the config (train.threads, train.numerics), metrics.json records
what was in force, and pinned caches (evaluator weights, real statistics) are kept apart."""
from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn

import eval.harness as harness
import eval.segmenter as segmenter_module
from eval.harness import evaluate_run
from eval.segmenter import default_segmenter_path, run_segmenter_path, segmenter_train_command, train_segmenter
from spade_bench.config import resolve
from spade_bench.numerics import NUMERICS_ENV


def test_the_segmenter_trains_on_train_threads_not_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")   # what used to decide it (resolve_threads(0))
    seen = []
    build = segmenter_module.build_segmentation_network

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return build(*args, **kwargs)

    monkeypatch.setattr(segmenter_module, "build_segmentation_network", spy)
    cfg = resolve("spade", preset="smoke", overrides=["train.threads=2", "data.synthetic_train_size=4",
                                                      "data.synthetic_val_size=2", "data.max_val_images=2"])
    info = train_segmenter(cfg, tmp_path / "seg.pt", steps=1, batch_size=2, device="cpu", progress=False)
    assert seen == [2] and torch.get_num_threads() == 1   # the caller's count comes back
    assert len(info["sha256"]) == 64


def test_pinned_evaluators_are_cached_apart_and_named_in_the_training_command():
    smoke = resolve("spade", preset="smoke")
    assert run_segmenter_path(smoke).name == "synthetic_64x64_root-none_train-400_steps-400_pinned-t1.pt"
    native = resolve("spade", preset="smoke", overrides=["train.numerics=native"])
    assert run_segmenter_path(native) == default_segmenter_path(native.data, steps=400)   # no numerics tag
    assert "--set train.numerics=native" in segmenter_train_command(native)
    two = resolve("spade", preset="smoke", overrides=["train.threads=2"])
    assert run_segmenter_path(two).name.endswith("_pinned-t2.pt")
    assert "--set train.threads=2" in segmenter_train_command(two)
    assert "train." not in segmenter_train_command(smoke)


class _ColourSegmenter(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 10, 1)

    def forward(self, x):
        return self.conv(x)


def test_evaluation_runs_on_the_runs_threads_and_records_its_numerics(tmp_path, make_run, stub_inception,
                                                                      monkeypatch):
    monkeypatch.setenv("SPADE_BENCH_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "colour.pt"
    torch.jit.script(_ColourSegmenter()).save(str(path))
    path.with_suffix(".json").write_text(json.dumps({"name": "colour-1x1", "mean": [0.5] * 3, "std": [0.5] * 3}))
    _, run = make_run(extra=["train.threads=2"])
    seen = []
    render_batch = harness._render_batch

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return render_batch(*args, **kwargs)

    monkeypatch.setattr(harness, "_render_batch", spy)
    result = evaluate_run(run, device="cpu", overrides=[f"eval.segmenter={path}", "eval.kid_subset_size=3"],
                          progress=False)
    assert seen and set(seen) == {2} and torch.get_num_threads() == 1
    saved = json.loads((run / "eval" / "metrics.json").read_text())
    numerics = saved["numerics"]
    assert numerics == result["numerics"]
    assert numerics["mode"] == "pinned" and numerics["torch_threads"] == 2
    assert numerics["onednn_isa"] == "Intel AVX2" and numerics["torch_cpu_capability"] == "AVX2"
    assert all(f"env.{name}" in numerics for name in NUMERICS_ENV)
    assert all(not isinstance(v, (dict, list)) for v in numerics.values())
    # The real statistics (Inception features: their bits follow the numerics) are keyed by them.
    stats = list((tmp_path / "cache" / "fid_stats").glob("*.npz"))
    assert stats
    for path in stats:
        with np.load(path) as f:
            assert json.loads(str(f["meta"]))["numerics"] == "pinned-t2"
