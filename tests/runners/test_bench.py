"""`spade-bench bench`: the JSON record's fields (not its speed), and fast-path numerics,
each on the CPU and (marked gpu) on CUDA."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from runners.bench import bench_config, compare_numerics, run_bench

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]

MODE_FIELDS = {"mode", "images_per_s", "ms_per_step", "ms_generator_step", "ms_discriminator_step",
               "peak_memory_gib", "peak_memory_kind", "gflop_per_image", "achieved_tflops", "bf16_peak_tflops",
               "share_of_bf16_peak", "generator_params", "discriminator_params", "amp_bf16", "channels_last",
               "compile", "fused_modulation", "perceptual", "perceptual_random_weights"}
RECORD_FIELDS = {"config", "variant", "batch", "steps", "warmup", "image_size", "semantic_channels", "device",
                 "hardware", "env", "modes", "speedup", "memory_ratio", "numerics", "eval", "complete"}
EVAL_FIELDS = {"images", "images_per_s", "batch", "fid_protocol", "fid_random_weights", "segmenter_random_encoder"}


@pytest.mark.parametrize("device", DEVICES)
def test_bench_cli_writes_json_with_all_fields(tmp_path, device):
    out = tmp_path / "bench.json"
    # --no-training: the CPU training comparison (worker processes) has its own test below.
    result = CliRunner().invoke(app, ["bench", "--config", "smoke", "--device", device, "--steps", "2",
                                      "--warmup", "1", "--eval-images", "4", "--out", str(out), "--no-training",
                                      "--set", "generator.ngf=8", "--set", "loss.perceptual=none"])
    assert result.exit_code == 0, result.output
    assert "fast / eager-fp32" in result.output
    record = json.loads(out.read_text())
    assert RECORD_FIELDS <= set(record), RECORD_FIELDS - set(record)
    assert set(record["modes"]) == {"eager-fp32", "fast"}
    for mode in record["modes"].values():
        assert MODE_FIELDS <= set(mode), MODE_FIELDS - set(mode)
        assert mode["images_per_s"] > 0 and mode["ms_generator_step"] > 0 and mode["ms_discriminator_step"] > 0
        assert mode["gflop_per_image"] > 0 and mode["peak_memory_gib"] > 0
    eager, fast = record["modes"]["eager-fp32"], record["modes"]["fast"]
    # The fast path keeps the architecture: identical parameter counts.
    assert eager["generator_params"] == fast["generator_params"]
    assert eager["discriminator_params"] == fast["discriminator_params"]
    assert eager["fused_modulation"] is False and fast["fused_modulation"] is True
    assert record["speedup"] == pytest.approx(fast["images_per_s"] / eager["images_per_s"])
    assert record["memory_ratio"] == pytest.approx(fast["peak_memory_gib"] / eager["peak_memory_gib"])
    assert record["complete"] is True
    assert EVAL_FIELDS <= set(record["eval"]) and record["eval"]["images_per_s"] > 0
    assert record["env"]["torch"]
    on_cuda = device == "cuda"
    # Every GPU lever is on in the fast mode on CUDA; on a CPU it keeps its fp32 levers only.
    assert fast["amp_bf16"] is on_cuda and fast["channels_last"] is on_cuda and fast["compile"] is on_cuda
    assert eager["amp_bf16"] is False and eager["channels_last"] is False and eager["compile"] is False
    assert record["device"].startswith(device)
    if on_cuda:
        assert fast["peak_memory_kind"] == "cuda max_memory_allocated"
        assert record["hardware"] == torch.cuda.get_device_name() == record["env"]["gpu"]
        assert record["env"]["cuda"] and record["env"]["cudnn"]
        if any(name in record["hardware"] for name in ("H100", "H200")):
            assert fast["bf16_peak_tflops"] == 989.0 and 0 < fast["share_of_bf16_peak"] < 1
    else:
        assert fast["bf16_peak_tflops"] is None and fast["share_of_bf16_peak"] is None


def test_a_bench_stopped_part_way_keeps_the_modes_it_measured(tmp_path, monkeypatch):
    def stopped(*args, **kwargs):
        raise KeyboardInterrupt  # as a time limit or Ctrl-C would stop it

    monkeypatch.setattr("runners.bench.compare_numerics", stopped)
    out = tmp_path / "bench.json"
    with pytest.raises(KeyboardInterrupt):
        run_bench("smoke", steps=1, warmup=0, modes=("eager-fp32",), device="cpu", out=out,
                  overrides=["generator.ngf=8", "loss.perceptual=none"])
    record = json.loads(out.read_text())
    assert record["complete"] is False and record["modes"]["eager-fp32"]["images_per_s"] > 0


def test_unknown_bench_config_and_mode_are_errors(tmp_path):
    bad = CliRunner().invoke(app, ["bench", "--config", "ade21k", "--device", "cpu"])
    assert bad.exit_code != 0 and "ade20k" in bad.output
    bad_mode = CliRunner().invoke(app, ["bench", "--config", "smoke", "--mode", "turbo", "--device", "cpu"])
    assert bad_mode.exit_code != 0 and "eager-fp32" in bad_mode.output


@pytest.mark.parametrize("device", DEVICES)
def test_fast_path_matches_eager_fp32_within_bf16_tolerance(device):
    """bf16 autocast (with channels_last and the fused SPADE convolution) against fp32 on the
    same weights and batch: the generator's output and every generator loss term."""
    cfg = bench_config("smoke", overrides=["generator.ngf=8", "loss.perceptual=effnet-lite0"])
    result = compare_numerics(cfg, torch.device(device))
    # bf16 keeps 8 bits of mantissa (relative step 2^-8 = 0.4%); errors compound over ~20 layers.
    assert result["output_max_abs_diff"] < 0.05
    assert result["output_mean_abs_diff"] < 0.01 * max(result["output_scale"], 1e-3) + 1e-3
    assert set(result["loss_rel_diff"]) == {"gan", "feat", "perceptual"}
    for name, rel in result["loss_rel_diff"].items():
        assert rel < 0.05, f"{name} differs by {rel:.3%} under bf16"
    # And the comparison is not vacuous: bf16 does change the numbers a little.
    assert result["output_max_abs_diff"] > 0


@pytest.mark.slow
def test_cpu_training_comparison_runs_each_mode_in_its_own_numerics(tmp_path):
    """The old eager path against the CPU path, interleaved, each mode its own process: the
    record says what each mode ran (numerics, threads, processes), how fast per round, the
    speed-up, and where a step's time went."""
    from runners.bench_training import MODES, PROFILE_GROUPS, format_training, run_training_comparison
    from spade_bench.distributed import available_cores

    rounds = []
    record = run_training_comparison("smoke", ("spade",), steps=1, warmup=0, rounds=2, on_round=rounds.append,
                                     overrides=["generator.ngf=8", "loss.perceptual=none",
                                                "data.synthetic_train_size=8"])
    assert rounds == ["round 1/2 done", "round 2/2 done"]
    assert set(record["modes"]) == set(MODES) and set(record["results"]) == {"spade"}
    cores = available_cores()
    eager, pinned, pairs = record["modes"]["eager"], record["modes"]["pinned-1t"], record["modes"]["fast-pairs"]
    assert eager["numerics"]["mode"] == "native" and eager["numerics"]["torch_threads"] == cores
    assert eager["numerics"]["env.ONEDNN_MAX_CPU_ISA"] is None     # unpinned: the pin's variables removed
    assert pinned["numerics"]["mode"] == "pinned" and pinned["numerics"]["onednn_isa"] == "Intel AVX2"
    assert pairs["processes"] == cores and record["modes"]["fast-1t"]["processes"] == 1
    assert pairs["overrides"]["train.channels_last_cpu"] is True and eager["overrides"]["optim.foreach"] is False
    for mode, result in record["results"]["spade"].items():
        assert len(result["steps_per_s_rounds"]) == 2 and result["steps_per_s"] > 0, mode
        assert set(result["profile_ms"]) == set(PROFILE_GROUPS) and result["profile_ms"]["G backward"] > 0
        assert result["profile_ms"]["perceptual forward"] == 0   # loss.perceptual=none
    speedup = record["speedup"]["spade"]
    assert speedup["fast_pairs_over_eager"] == pytest.approx(
        record["results"]["spade"]["fast-pairs"]["steps_per_s"] / record["results"]["spade"]["eager"]["steps_per_s"])
    assert record["modes"]["eager"]["ops_per_step"]["spade"] > 100
    text = format_training(record)
    assert "fast-pairs/eager" in text and "spade eager" in text and "spade fast-1t" in text
