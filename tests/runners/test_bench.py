"""`spade-bench bench`: the JSON record's fields (not its speed), and fast-path numerics."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli import app
from runners.bench import bench_config, compare_numerics

MODE_FIELDS = {"images_per_s", "ms_per_step", "ms_generator_step", "ms_discriminator_step", "peak_memory_gib",
               "gflop_per_image", "achieved_tflops", "share_of_bf16_peak", "generator_params",
               "discriminator_params", "amp_bf16", "channels_last", "compile", "fused_modulation"}


def test_bench_cli_writes_json_with_all_fields(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "--config", "smoke", "--device", "cpu", "--steps", "2",
                                      "--warmup", "1", "--eval-images", "4", "--out", str(out),
                                      "--set", "generator.ngf=8", "--set", "loss.perceptual=none"])
    assert result.exit_code == 0, result.output
    assert "fast / eager-fp32" in result.output
    record = json.loads(out.read_text())
    assert set(record["modes"]) == {"eager-fp32", "fast"}
    for mode in record["modes"].values():
        assert MODE_FIELDS <= set(mode)
        assert mode["images_per_s"] > 0 and mode["ms_generator_step"] > 0 and mode["ms_discriminator_step"] > 0
        assert mode["gflop_per_image"] > 0
    eager, fast = record["modes"]["eager-fp32"], record["modes"]["fast"]
    # The fast path keeps the architecture: identical parameter counts.
    assert eager["generator_params"] == fast["generator_params"]
    assert eager["discriminator_params"] == fast["discriminator_params"]
    assert eager["fused_modulation"] is False and fast["fused_modulation"] is True
    assert record["speedup"] == pytest.approx(fast["images_per_s"] / eager["images_per_s"])
    assert record["eval"]["images_per_s"] > 0
    assert record["env"]["torch"]


def test_unknown_bench_config_and_mode_are_errors(tmp_path):
    bad = CliRunner().invoke(app, ["bench", "--config", "ade21k", "--device", "cpu"])
    assert bad.exit_code != 0 and "ade20k" in bad.output
    bad_mode = CliRunner().invoke(app, ["bench", "--config", "smoke", "--mode", "turbo", "--device", "cpu"])
    assert bad_mode.exit_code != 0 and "eager-fp32" in bad_mode.output


def test_fast_path_matches_eager_fp32_within_bf16_tolerance():
    import torch

    cfg = bench_config("smoke", overrides=["generator.ngf=8", "loss.perceptual=effnet-lite0"])
    result = compare_numerics(cfg, torch.device("cpu"))
    # bf16 keeps 8 bits of mantissa (relative step 2^-8 = 0.4%); errors compound over ~20 layers.
    assert result["output_max_abs_diff"] < 0.05
    assert result["output_mean_abs_diff"] < 0.01 * max(result["output_scale"], 1e-3) + 1e-3
    assert set(result["loss_rel_diff"]) == {"gan", "feat", "perceptual"}
    for name, rel in result["loss_rel_diff"].items():
        assert rel < 0.05, f"{name} differs by {rel:.3%} under bf16"
    # And the comparison is not vacuous: bf16 does change the numbers a little.
    assert result["output_max_abs_diff"] > 0
