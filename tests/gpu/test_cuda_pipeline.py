"""A short train, eval and report on CUDA through the command line, and `spade-bench eval`
of the same checkpoint on CUDA and on the CPU giving the same metrics.

The CUDA eval runs as the command does: cuDNN may use TF32 (PyTorch's default, and the
Trainer's), and generated images are quantised to uint8 PNGs, so a pixel can land one level
apart. Tolerances on 8 images: FID within 2% (or 0.1% of the features' mean squared
norm, for a FID near 0), KID within 2% (or 1e-3, as it sits near 0), mIoU and pixel
accuracy within 2 percentage points. `bench` on CUDA: tests/runners/test_bench.py.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli import app

pytestmark = pytest.mark.gpu

DATA = ["--set", "data.synthetic_train_size=32", "--set", "data.max_val_images=8"]


def _invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def _close(a: float, b: float, rel: float, abs_: float = 0.0) -> bool:
    return abs(a - b) <= max(rel * abs(b), abs_)


def test_train_eval_report_on_cuda_and_eval_matches_cpu(tmp_path, monkeypatch, fid_inception):
    segmenter = tmp_path / "segmenter.pt"
    _invoke("segmenter", "train", "--dataset", "synthetic", "--preset", "smoke", "--steps", "20",
            "--batch-size", "4", "--device", "cuda", "--out", str(segmenter), *DATA)
    run = tmp_path / "runs" / "spade-s0"
    _invoke("train", "--preset", "smoke", "--out", str(run), "--set", "train.device=cuda",
            "--set", "train.steps=20", "--set", "train.decay_steps=10", "--set", "train.log_every=5", "--set", "train.sample_every=20",
            "--set", "train.checkpoint_every=10", *DATA)
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["status"] == "finished" and summary["step"] == 20
    assert summary["device"].startswith("cuda") and summary["hardware"] == torch.cuda.get_device_name()
    assert summary["amp_bf16"] is True and summary["peak_memory_kind"] == "cuda max_memory_allocated"
    assert summary["peak_memory_gib"] > 0 and summary["images_per_s"] > 0
    assert (run / "samples" / "step_0000020.png").is_file()

    cpu_run = tmp_path / "cpu-runs" / "spade-s0"
    shutil.copytree(run, cpu_run)
    settings = ["--set", f"eval.segmenter={segmenter}", "--set", "eval.kid_subset_size=4",
                "--set", "eval.kid_subsets=5"]
    _invoke("eval", "--run", str(run), "--device", "cuda", *settings)
    # Its own cache, so the CPU computes the real-image statistics too instead of reading the GPU's.
    monkeypatch.setenv("SPADE_BENCH_CACHE", str(tmp_path / "cpu-cache"))
    _invoke("eval", "--run", str(cpu_run), "--device", "cpu", *settings)
    gpu, cpu = (json.loads((r / "eval" / "metrics.json").read_text()) for r in (run, cpu_run))
    assert gpu["protocol"]["device"].startswith("cuda") and cpu["protocol"]["device"] == "cpu"
    assert gpu["protocol"]["num_images"] == cpu["protocol"]["num_images"] == 8
    g, c = gpu["metrics"], cpu["metrics"]
    # FID is a difference of large terms: next to 2% of itself, allow 0.1% of the features'
    # mean squared norm (which those terms are made of), for a FID near 0 (random weights).
    features = np.load(cpu_run / "eval" / "fake_features.npy").astype(np.float64)
    scale = float((features ** 2).sum(1).mean())
    assert _close(g["fid"], c["fid"], 0.02, 1e-3 * scale), (g, c, scale)
    assert _close(g["kid"], c["kid"], 0.02, 1e-3), (g, c)
    for key in ("miou", "pixel_accuracy"):
        assert _close(g[key], c[key], 0, 2.0), (key, g, c)
    refs_gpu, refs_cpu = gpu["references"], cpu["references"]
    for key in ("real_val_miou", "real_val_pixel_accuracy"):
        assert _close(refs_gpu[key], refs_cpu[key], 0, 2.0), (key, refs_gpu, refs_cpu)
    assert _close(refs_gpu["fid_train_vs_val"], refs_cpu["fid_train_vs_val"], 0.02, 1e-3 * scale), refs_cpu

    report = tmp_path / "report"
    _invoke("report", str(run), "--out", str(report), "-B", "50", "--fid-bootstrap", "10")
    built = json.loads((report / "summary.json").read_text())
    assert [r["status"] for r in built["runs"]] == ["ok"]
    assert (report / "ablation.md").stat().st_size > 0
