"""`spade-bench eval --run RUN`: generate every validation image with fixed seeds, score it,
and write RUN/eval/metrics.json with the full protocol record.

One pass over the validation set, batch by batch:
1. generate the images not on disk yet (model.eval(), no_grad, per-image seeds) and write
   RUN/eval/images/NNNNN.png, plus real/ and labels/ (colour) at the evaluation size;
2. score the uint8 pixels as stored: FID features (and real features, unless cached), the
   segmenter on generated and on real images (the ceiling);
3. FID / KID against the cached real statistics, FID of real train vs val images (the
   floor), mIoU and pixel accuracy from one confusion matrix.

A crash leaves finished PNGs behind; the next run generates only what is missing. If the
generation settings changed (checkpoint, seed, sizes), all images are generated again.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from eval.fid import (FeatureExtractor, cached_real_statistics, fid_bias_warning, fid_from_features,
                      kid_from_features, real_stats_path)
from eval.images import eval_hw, load_image, resize_labels, resize_uint8, save_png, to_uint8, from_uint8
from eval.protocol import PER_IMAGE_SEED, build_protocol, code_state, per_image_seed
from eval.segmenter import (Segmenter, default_segmenter_path, load_segmenter, resolve_device,
                            segmenter_train_command, summarise)
from eval.segmentation_metrics import ConfusionMatrixMetric
from spade_bench.errors import ConfigError, EvalError
from spade_bench.io import atomic_write, atomic_write_json

METRICS = ("fid", "kid", "miou", "acc", "all")
SCHEMA_VERSION = 1


def _wants(metric: str) -> tuple[bool, bool, bool]:
    """(FID, KID, segmentation) needed for a --metric choice."""
    if metric not in METRICS:
        raise EvalError(f"unknown --metric {metric!r}; use one of {', '.join(METRICS)}")
    return metric in ("fid", "all"), metric in ("kid", "all"), metric in ("miou", "acc", "all")


def apply_eval_overrides(cfg, overrides: Optional[list[str]]):
    """Apply `--set eval.k=v` overrides; anything outside eval.* would change the experiment."""
    from spade_bench.config import apply_overrides

    overrides = list(overrides or [])
    for item in overrides:
        if not item.strip().startswith("eval."):
            raise ConfigError(f"--set {item!r}: evaluation only takes eval.* keys (e.g. eval.fid_protocol=tf); "
                              f"the rest of the config belongs to the trained run")
    return apply_overrides(cfg, overrides) if overrides else cfg


def num_eval_images(cfg, available: int) -> int:
    limits = [available] + [v for v in (cfg.data.max_val_images, cfg.eval.num_images) if v is not None]
    return max(0, min(limits))


def find_segmenter(cfg, device) -> Segmenter:
    """The evaluator the protocol names: eval.segmenter, or the dataset default in the cache."""
    path = Path(cfg.eval.segmenter).expanduser() if cfg.eval.segmenter else default_segmenter_path(cfg.data)
    if not path.is_file():
        if cfg.eval.segmenter:
            raise EvalError(f"segmenter checkpoint {path} (eval.segmenter) does not exist; fix the path, or "
                            f"train the default one with: {segmenter_train_command(cfg)}")
        raise EvalError(f"no segmentation evaluator for {cfg.data.dataset} at "
                        f"{cfg.data.image_size[0]}x{cfg.data.image_size[1]} (looked for {path}); train it with: "
                        f"{segmenter_train_command(cfg)}   or pass --set eval.segmenter=PATH")
    return load_segmenter(path, cfg.data.label_nc, device)


def _run_section(run_dir: Path, cfg, generator) -> dict[str, Any]:
    from spade_bench.config import config_hash
    from spade_bench.nn import count_parameters

    try:
        from spade_bench.discriminators import build_discriminator
        discriminator_params = count_parameters(build_discriminator(cfg))
    except Exception:  # noqa: BLE001 - a parameter count must not block an evaluation
        discriminator_params = None
    summary = _read_json(run_dir / "train_summary.json")
    env = _read_json(run_dir / "env.json")
    perceptual = cfg.loss.perceptual if cfg.loss.lambda_perceptual > 0 else "none"
    return {
        "dir": str(run_dir.resolve()), "variant": cfg.variant, "seed": cfg.train.seed, "preset": cfg.preset,
        "dataset": cfg.data.dataset, "config_hash": config_hash(cfg),
        "generator_params": count_parameters(generator), "discriminator_params": discriminator_params,
        "perceptual": perceptual, "steps": cfg.train.steps, "ema": cfg.train.ema,
        "hardware": summary.get("hardware") or env.get("gpu") or summary.get("device") or env.get("device"),
        "train_images_per_s": summary.get("images_per_s"),
        "train_peak_memory_gib": summary.get("peak_memory_gib"),
        # Where the weights came from (an NVlabs import writes it); null for our own training.
        "provenance": _read_json(run_dir / "provenance.json") or None,
    }


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}


class _Generation:
    """Generates one batch of validation images with per-image seeds."""

    def __init__(self, cfg, generator, encoder, device):
        self.cfg, self.generator, self.encoder, self.device = cfg, generator, encoder, device
        self.use_vae = bool(cfg.generator.use_vae)

    @torch.no_grad()
    def __call__(self, sample: dict[str, Any], indices: list[int]) -> torch.Tensor:
        from spade_bench.data import semantic_input

        label = sample["label"].to(self.device)
        instance = sample.get("instance")
        instance = instance.to(self.device) if instance is not None else None
        segmap = semantic_input(label, instance, self.cfg.data)
        seeds = [per_image_seed(self.cfg.eval.seed, i) for i in indices]
        if self.use_vae:
            noise = torch.stack([torch.randn(self.cfg.generator.z_dim, generator=torch.Generator().manual_seed(s))
                                 for s in seeds]).to(self.device)
            if self.encoder is not None:
                # As the original test code does: z from the posterior of the real photo.
                mu, logvar = self.encoder(sample["image"].to(self.device))
                z = mu + noise * torch.exp(0.5 * logvar)
            else:
                z = noise
            return self.generator(segmap, z)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seeds[0])
            return self.generator(segmap)


def _colour_labels(labels: torch.Tensor, data_cfg) -> torch.Tensor:
    """Label maps in the dataset's own colours; don't-care is black."""
    from spade_bench.data import colorize
    from spade_bench.data.palette import dataset_palette

    return colorize(labels, data_cfg.label_nc, palette=dataset_palette(data_cfg))


def evaluate_run(run_dir: str | Path, *, metric: str = "all", checkpoint: str = "latest",
                 device: str = "auto", overrides: Optional[list[str]] = None,
                 progress: bool = True) -> dict[str, Any]:
    """Evaluate a training run; writes RUN/eval/ and returns the metrics.json content."""
    from spade_bench.checkpoint import load_generator
    from spade_bench.data import build_dataset, class_names

    start = time.perf_counter()
    want_fid, want_kid, want_seg = _wants(metric)
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise EvalError(f"{run_dir} is not a run directory (no config.json); pass the folder `train --out` wrote")
    device = resolve_device(device)
    cfg, generator, encoder, step = load_generator(run_dir, checkpoint, device)
    cfg = apply_eval_overrides(cfg, overrides)
    generator.eval()
    if encoder is not None:
        encoder.eval()
    data = cfg.data
    # Fail on a missing evaluator before spending time on generation.
    segmenter = find_segmenter(cfg, device) if want_seg else None

    val_set = build_dataset(data, "val", augment=False)
    count = num_eval_images(cfg, len(val_set))
    if count == 0:
        raise EvalError(f"the validation split of {data.dataset} (root {data.root}) has no images to evaluate")
    if (want_fid or want_kid) and count < 2:
        raise EvalError(f"FID and KID need at least 2 images; only {count} would be evaluated "
                        f"(eval.num_images={cfg.eval.num_images}, data.max_val_images={data.max_val_images})")
    generation_hw = tuple(data.image_size)
    scoring_hw = eval_hw(generation_hw, cfg.eval.eval_size)
    resize_mode = data.image_resize
    ignore_index = data.label_nc if data.contain_dontcare else None
    names = list(class_names(data))

    out = run_dir / "eval"
    for sub in ("images", "real", "labels"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    manifest = {"checkpoint_step": step, "seed": cfg.eval.seed,
                "generation_size": list(generation_hw), "eval_size": list(scoring_hw),
                "image_resize": resize_mode, "dataset": data.dataset, "root": data.root,
                "vae_z": _vae_z(cfg, encoder)}
    manifest_path = out / "images" / "generation.json"
    if _read_json(manifest_path) != manifest:
        stale = [p for sub in ("images", "real", "labels") for p in (out / sub).glob("*.png")]
        if stale:
            warnings.warn(f"{out / 'images'} holds images from other generation settings "
                          f"(checkpoint, seed or sizes); deleting them and generating all again")
        # Delete before writing the new manifest: an interrupted run must never mix old and new images.
        for path in stale:
            path.unlink()
        manifest_path.unlink(missing_ok=True)
    atomic_write_json(manifest_path, manifest)

    extractor = FeatureExtractor(cfg.eval.fid_protocol, device, cfg.eval.batch_size) if (want_fid or want_kid) else None
    stats_path = real_stats_meta = None
    if extractor is not None:
        real_stats_meta = dict(dataset=data.dataset, split="val", size_hw=scoring_hw, protocol=cfg.eval.fid_protocol,
                               root=data.root, num_images=count, image_resize=resize_mode,
                               extractor_sha256=extractor.weights_sha256)
        stats_path = real_stats_path(**real_stats_meta)
    need_real_features = extractor is not None and not stats_path.is_file()

    fake_metric = ConfusionMatrixMetric(data.label_nc, ignore_index, per_image_counts=True) if want_seg else None
    real_metric = ConfusionMatrixMetric(data.label_nc, ignore_index) if want_seg else None
    fake_features, real_features = [], []
    timings = {"generate_s": 0.0, "fid_s": 0.0, "segment_s": 0.0}
    generated = 0
    generate = _Generation(cfg, generator, encoder, device)
    loader = DataLoader(Subset(val_set, range(count)), batch_size=cfg.eval.batch_size, shuffle=False,
                        num_workers=data.num_workers)
    with tqdm(total=count, desc="eval", unit="img", disable=not progress) as bar:
        for sample in loader:
            indices = [int(i) for i in sample["index"]] if "index" in sample else \
                list(range(bar.n, bar.n + sample["label"].shape[0]))
            paths = [out / "images" / f"{i:05d}.png" for i in indices]
            missing = [k for k, p in enumerate(paths) if not p.is_file()]
            fakes: list[Optional[torch.Tensor]] = [None] * len(indices)
            if missing:
                t0 = time.perf_counter()
                images = generate(sample, indices)
                images = resize_uint8(to_uint8(images.float().cpu()), scoring_hw, resize_mode)
                for k in missing:
                    save_png(images[k], paths[k])
                    fakes[k] = images[k]
                timings["generate_s"] += time.perf_counter() - t0
                generated += len(missing)
            for k, p in enumerate(paths):
                if fakes[k] is None:
                    fakes[k] = _read_png(p, scoring_hw)
            fake = torch.stack(fakes)
            real = resize_uint8(to_uint8(sample["image"]), scoring_hw, resize_mode)
            labels = resize_labels(sample["label"].long(), scoring_hw)
            for k, i in enumerate(indices):
                if not (out / "real" / f"{i:05d}.png").is_file():
                    save_png(real[k], out / "real" / f"{i:05d}.png")
                if not (out / "labels" / f"{i:05d}.png").is_file():
                    save_png(_colour_labels(labels[k], data), out / "labels" / f"{i:05d}.png")
            if extractor is not None:
                t0 = time.perf_counter()
                fake_features.append(extractor(fake))
                if need_real_features:
                    real_features.append(extractor(real))
                timings["fid_s"] += time.perf_counter() - t0
            if segmenter is not None:
                t0 = time.perf_counter()
                fake_metric.update(segmenter.predict(from_uint8(fake).to(device)).cpu(), labels)
                real_metric.update(segmenter.predict(from_uint8(real).to(device)).cpu(), labels)
                timings["segment_s"] += time.perf_counter() - t0
            bar.update(len(indices))

    metrics = {"fid": None, "kid": None, "kid_std": None, "miou": None, "pixel_accuracy": None}
    references = {"real_val_miou": None, "real_val_pixel_accuracy": None, "fid_train_vs_val": None}
    files = {"fake_features": None, "real_stats": None, "per_image_counts": None}
    messages: list[str] = []
    per_class_iou: dict[str, Optional[float]] = {}
    kid_subset_used = None
    if extractor is not None:
        fake_array = np.concatenate(fake_features).astype(np.float32)
        atomic_write(out / "fake_features.npy", lambda f: np.save(f, fake_array))
        files["fake_features"] = "fake_features.npy"
        real_stats = cached_real_statistics(stats_path, lambda: np.concatenate(real_features),
                                            {k: v for k, v in real_stats_meta.items()} | {"size_hw": list(scoring_hw)})
        files["real_stats"] = str(stats_path.resolve())
        if want_fid:
            metrics["fid"] = fid_from_features(fake_array, real_stats.features)
            references["fid_train_vs_val"] = _fid_train_vs_val(cfg, extractor, count, scoring_hw, real_stats, progress)
            warning = fid_bias_warning(count)
            if warning:
                messages.append(warning)
                warnings.warn(warning)
        if want_kid:
            kid, kid_std, subset = kid_from_features(real_stats.features, fake_array, subsets=cfg.eval.kid_subsets,
                                                     subset_size=cfg.eval.kid_subset_size, seed=cfg.eval.seed)
            metrics["kid"], metrics["kid_std"] = kid, kid_std
            kid_subset_used = subset
    if segmenter is not None:
        fake_summary = summarise(fake_metric, names)
        real_summary = summarise(real_metric, names)
        metrics["miou"], metrics["pixel_accuracy"] = fake_summary["miou"], fake_summary["pixel_accuracy"]
        per_class_iou = fake_summary["per_class_iou"]
        references["real_val_miou"] = real_summary["miou"]
        references["real_val_pixel_accuracy"] = real_summary["pixel_accuracy"]
        counts = fake_metric.image_counts()
        atomic_write(out / "per_image_counts.npz", lambda f: np.savez(f, **counts))
        files["per_image_counts"] = "per_image_counts.npz"

    wall = time.perf_counter() - start
    work = timings["generate_s"] + timings["fid_s"] + timings["segment_s"]
    protocol = build_protocol(
        num_images=count, generation_size=list(generation_hw), eval_size=list(scoring_hw),
        image_resize=(f"dataset: {resize_mode}; to eval size: "
                      f"{'none' if scoring_hw == generation_hw else resize_mode + ' (torch, antialias)'}"),
        label_resize="nearest",
        fid_protocol=cfg.eval.fid_protocol if extractor is not None else None,
        fid_extractor_sha256=extractor.weights_sha256 if extractor is not None else None,
        segmenter=segmenter.name if segmenter is not None else None,
        segmenter_sha256=segmenter.sha256 if segmenter is not None else None,
        seeds={"eval_seed": cfg.eval.seed, "per_image": PER_IMAGE_SEED, "kid_subsets": cfg.eval.seed},
        wall_time_s=wall,
        metric=metric, checkpoint=checkpoint, device=str(device), vae_z=manifest["vae_z"],
        kid_subsets=cfg.eval.kid_subsets if want_kid else None,
        kid_subset_size=kid_subset_used,
        segmenter_input=segmenter.describe_input() if segmenter is not None else None,
        checkpoint_step=step,
        # Protocol switches for released weights (issue 12); recorded with today's only values.
        label_mapping=None, segmenter_input_size="generation", real_set="val",
        timings={**timings, "generated_images": generated,
                 "images_per_s": (count / work) if work > 0 else None},
    )
    result = {
        "schema": SCHEMA_VERSION,
        "code": code_state(),
        "run": _run_section(run_dir, cfg, generator),
        "checkpoint_step": step,
        "metrics": metrics,
        "per_class_iou": per_class_iou,
        "references": references,
        "protocol": protocol,
        "files": files,
        "warnings": messages,
    }
    atomic_write_json(out / "metrics.json", _finite(result))
    return result


def _vae_z(cfg, encoder) -> Optional[str]:
    if not cfg.generator.use_vae:
        return None
    if encoder is not None:
        return "posterior of the real photo: mu + eps * exp(logvar / 2), eps from the per-image seed"
    return "prior: N(0, I) from the per-image seed"


def _read_png(path: Path, size_hw: tuple[int, int]) -> torch.Tensor:
    image = load_image(path)
    if tuple(image.shape[-2:]) != tuple(size_hw):
        raise EvalError(f"{path} is {image.shape[-2]}x{image.shape[-1]}, expected {size_hw[0]}x{size_hw[1]}; "
                        f"delete {path.parent} to generate again")
    return image


def _fid_train_vs_val(cfg, extractor: FeatureExtractor, count: int, scoring_hw, val_stats, progress: bool) -> Optional[float]:
    """FID of real training images (same count, evenly spaced, no augmentation) against the real
    validation images at the same protocol and size: the floor a generator can approach."""
    from spade_bench.data import build_dataset

    data = cfg.data
    train_set = build_dataset(data, "train", augment=False)
    n = min(count, len(train_set))
    if n < 2:
        return None
    indices = np.linspace(0, len(train_set) - 1, n).round().astype(int).tolist()
    meta = dict(dataset=data.dataset, split="train", size_hw=scoring_hw, protocol=extractor.protocol,
                root=data.root, num_images=n, image_resize=data.image_resize,
                extractor_sha256=extractor.weights_sha256)
    path = real_stats_path(**meta)

    def compute() -> np.ndarray:
        loader = DataLoader(Subset(train_set, indices), batch_size=cfg.eval.batch_size, shuffle=False,
                            num_workers=data.num_workers)
        batches = (resize_uint8(to_uint8(s["image"]), scoring_hw, data.image_resize) for s in loader)
        return extractor.extract(batches, total=n, desc="FID features (real train)")

    train_stats = cached_real_statistics(path, compute, meta | {"size_hw": list(scoring_hw)})
    return fid_from_features(train_stats.features, val_stats.features)


def _finite(value: Any) -> Any:
    """JSON has no NaN: non-finite floats become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
