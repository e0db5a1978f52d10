"""Fixtures for the evaluation tests: a cheap stand-in for the FID Inception network.

The real network (tests/eval/test_inception.py, test_fid.py) costs seconds per image on a
CPU; tests of the harness and folder plumbing swap in a small fixed projection instead.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

STUB_SHA256 = "0" * 64


class StubInception(nn.Module):
    """2048-d features from an 8x8 average pool and a fixed random projection."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("projection", torch.randn(3 * 8 * 8, 2048, generator=generator) / 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, 8).flatten(1) @ self.projection


@pytest.fixture
def stub_inception(monkeypatch):
    """Replace the FID network everywhere eval.fid builds a FeatureExtractor."""
    monkeypatch.setattr("eval.fid.load_fid_inception", lambda device="cpu": (StubInception().to(device), STUB_SHA256))
    return StubInception


@pytest.fixture
def make_run(tmp_path, monkeypatch):
    """Factory for a fake run directory: config.json and train_summary.json, with
    `spade_bench.checkpoint.load_generator` patched to return a tiny untrained generator.

    make_run(name="run", variant="spade", extra=()) -> (cfg, run_dir)
    """
    import json

    from spade_bench.config import load_config_file, resolve, save_config
    from spade_bench.generators import build_generator

    generators = {}

    def fake_load_generator(run_dir, checkpoint="latest", device="cpu", **kwargs):
        from pathlib import Path

        run_dir = Path(run_dir)
        if not (run_dir / "config.json").is_file():
            from spade_bench.errors import CheckpointError
            raise CheckpointError(f"{run_dir} is not a run directory (no config.json)")
        return load_config_file(run_dir / "config.json"), generators[run_dir.name].to(device), None, 7

    monkeypatch.setattr("spade_bench.checkpoint.load_generator", fake_load_generator)

    def make(name: str = "run", variant: str = "spade", extra=()):
        cfg = resolve(variant, preset="smoke", overrides=[
            "generator.ngf=8", "data.synthetic_val_size=4", "data.max_val_images=4", "data.num_workers=0",
            "eval.batch_size=2", *extra])
        run = tmp_path / name
        run.mkdir()
        save_config(cfg, run / "config.json")
        (run / "train_summary.json").write_text(json.dumps(
            {"status": "finished", "step": 7, "images_per_s": 12.5, "peak_memory_gib": 0.25, "wall_time_s": 3.0,
             "device": "cpu"}))
        torch.manual_seed(0)
        generators[name] = build_generator(cfg).eval()
        return cfg, run

    return make
