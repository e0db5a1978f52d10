"""Fabricated run directories that follow docs/ARCHITECTURE.md exactly, with random numbers.

`make_run(root, variant, seed, quality=...)` writes config.json, train_summary.json,
logs/losses.jsonl, eval/metrics.json, eval/fake_features.npy, eval/per_image_counts.npz and
eval/images|real|labels/NNNNN.png; metrics.json holds the values computed from the arrays
(NumPy and scipy directly), as the evaluator would. Higher `quality` means more correct
pixels and features closer to the real ones.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from eval.fid import fid_from_features
from spade_bench.config import RunConfig, config_hash, to_dict, with_dataset

NUM_IMAGES = 12
NUM_CLASSES = 5
FEATURE_DIM = 48
PIXELS_PER_CLASS = 40
IMAGE_SIZE = 32
PARAMS = {"spade": 1_200_000, "concat": 1_100_000, "pix2pixhd": 2_500_000, "spade-k1": 1_000_000,
          "spade-gamma": 1_200_000, "spade-vae": 1_600_000}
PALETTE = np.array([[128, 64, 128], [70, 70, 70], [107, 142, 35], [70, 130, 180], [220, 20, 60]],
                   dtype=np.uint8)


def write_real_stats(path: Path, seed: int = 123, num_real: int = 40) -> Path:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(num_real, FEATURE_DIM)).astype(np.float32)
    mu, sigma = features.astype(np.float64).mean(0), np.cov(features.astype(np.float64), rowvar=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, mu=mu, sigma=sigma, features=features, meta=np.array("{}"))
    return path


def reference_kid(fake: np.ndarray, real: np.ndarray) -> float:
    x, y = fake.astype(np.float64), real.astype(np.float64)
    d = x.shape[1]
    kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
    n, m = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2 * kxy.mean())


def counts_from_accuracy(correct_fraction: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-image tp/fp/fn [N, K]: every class has PIXELS_PER_CLASS pixels, a wrong pixel of
    class k is predicted as class k+1 (so the counts form a real confusion matrix)."""
    n = len(correct_fraction)
    tp = rng.binomial(PIXELS_PER_CLASS, np.clip(correct_fraction, 0, 1)[:, None], size=(n, NUM_CLASSES))
    fn = PIXELS_PER_CLASS - tp
    fp = np.roll(fn, 1, axis=1)
    return {"tp": tp.astype(np.int64), "fp": fp.astype(np.int64), "fn": fn.astype(np.int64),
            "valid": np.full(n, PIXELS_PER_CLASS * NUM_CLASSES, np.int64)}


def miou_accuracy(tp, fp, fn) -> tuple[float, float]:
    tp, fp, fn = tp.sum(0).astype(float), fp.sum(0).astype(float), fn.sum(0).astype(float)
    union = tp + fp + fn
    return float(100 * np.mean(tp[union > 0] / union[union > 0])), float(100 * tp.sum() / (tp + fn).sum())


def make_run(root: Path, variant: str, seed: int, *, quality: float = 0.0, real_stats: Path,
             dataset: str = "synthetic", status: str = "finished", error: Optional[str] = None,
             evaluated: bool = True, counts: Optional[dict] = None,
             features: Optional[np.ndarray] = None, protocol: Optional[dict] = None,
             steps: int = 200, hardware: str = "cpu (test)", images_per_s: float = 10.0,
             num_images: int = NUM_IMAGES, label_dependence: Optional[dict] = None,
             code: Optional[dict] = None, provenance: Optional[dict] = None,
             references: Optional[dict] = None, d_loss: Optional[float] = None,
             preset: str = "smoke") -> Path:
    """Write one run directory `root/<variant>-s<seed>` and return it.

    The metrics.json additions of docs/ARCHITECTURE.md (code, label_dependence,
    run.provenance) get plausible defaults; pass a dict to override one (provenance
    {"source": "nvlabs"} makes an imported released-weights run). `d_loss`: the
    discriminator loss the log settles at (D/real and D/fake each half of it).
    """
    rng = np.random.default_rng([seed, sum(map(ord, variant)), int(quality * 1000) % 997])
    run = root / f"{variant}-s{seed}"
    (run / "logs").mkdir(parents=True, exist_ok=True)
    base = with_dataset(RunConfig(), dataset)
    cfg = replace(base, variant=variant, preset=preset,
                  train=replace(base.train, seed=seed, steps=steps, decay_steps=steps // 2))
    (run / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))

    summary = {"status": status, "step": steps if status == "finished" else steps // 2,
               "images_per_s": images_per_s + rng.normal(0, 0.3), "peak_memory_gib": 0.5 + quality,
               "wall_time_s": 30.0, "device": hardware}
    if error:
        summary["error"] = error
    (run / "train_summary.json").write_text(json.dumps(summary))
    with open(run / "logs" / "losses.jsonl", "w") as f:
        for step in range(0, summary["step"] + 1, 5):
            decay = np.exp(-step / 80)
            row = {"step": step, "time": step * 0.1, "G/gan": 1 + decay + rng.normal(0, 0.1),
                   "G/feat": 3 * decay + 1 + rng.normal(0, 0.2), "G/perceptual": 2 * decay + 0.5 + rng.normal(0, 0.1),
                   "D/real": 0.8 * decay + 0.3 + rng.normal(0, 0.05), "D/fake": 0.7 * decay + 0.3 + rng.normal(0, 0.05),
                   "lr_G": 1e-4, "lr_D": 4e-4, "images_per_s": images_per_s}
            if d_loss is not None:
                row["D/real"] = row["D/fake"] = d_loss / 2
            row["G/total"] = row["G/gan"] + row["G/feat"] + row["G/perceptual"]
            f.write(json.dumps(row) + "\n")
        if status == "failed":
            f.write('{"step": 10')  # a line cut short by the crash
    if not evaluated:
        return run

    eval_dir = run / "eval"
    for folder in ("images", "real", "labels"):
        (eval_dir / folder).mkdir(parents=True, exist_ok=True)
    if counts is None:
        counts = counts_from_accuracy(0.5 + quality + rng.normal(0, 0.05, size=num_images), rng)
    if features is None:
        features = (rng.normal(size=(num_images, FEATURE_DIM)) * (1.5 - quality) + (1 - quality)).astype(np.float32)
    np.save(eval_dir / "fake_features.npy", features)
    np.savez(eval_dir / "per_image_counts.npz", **counts)
    yy, xx = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE]
    for i in range(min(4, len(features))):
        label = ((xx // 8 + yy // 11 + i) % NUM_CLASSES).astype(np.int64)
        colour = PALETTE[label]
        real = np.clip(colour.astype(float) * 0.8 + rng.normal(0, 20, colour.shape), 0, 255).astype(np.uint8)
        fake = np.clip(colour.astype(float) * (0.5 + quality) + rng.normal(0, 40, colour.shape), 0, 255).astype(np.uint8)
        name = f"{i:05d}.png"
        Image.fromarray(colour).save(eval_dir / "labels" / name)
        Image.fromarray(real).save(eval_dir / "real" / name)
        Image.fromarray(fake).save(eval_dir / "images" / name)

    with np.load(real_stats) as stats:
        mu_real, sigma_real, real_features = stats["mu"], stats["sigma"], stats["features"]
    miou, accuracy = miou_accuracy(counts["tp"], counts["fp"], counts["fn"])
    metrics = {
        "schema": 1,
        "run": {"dir": str(run), "variant": variant, "seed": seed, "preset": preset, "dataset": dataset,
                "config_hash": config_hash(cfg), "generator_params": PARAMS.get(variant, 1_000_000),
                "discriminator_params": 300_000, "perceptual": "effnet-lite0", "steps": steps, "ema": False,
                "hardware": hardware, "train_images_per_s": summary["images_per_s"],
                "train_peak_memory_gib": summary["peak_memory_gib"], "provenance": provenance},
        "code": code or {"commit": "c0ffee" + "0" * 34, "dirty": False},
        "label_dependence": label_dependence or {
            "uniform_distinctness": 0.05 + quality / 2 + rng.normal(0, 0.005),
            "label_spread": 0.04 + quality / 3, "degenerate": False,
            "rule": "label_spread < 0.01 (test rule)"},
        "checkpoint_step": steps,
        "metrics": {"fid": fid_from_features(features, real_features),
                    "kid": reference_kid(features, real_features), "kid_std": 0.001,
                    "miou": miou, "pixel_accuracy": accuracy},
        "per_class_iou": {f"class{k}": 0.5 for k in range(NUM_CLASSES)},
        "references": references or {"real_val_miou": 80.0, "real_val_pixel_accuracy": 90.0,
                                      "fid_train_vs_val": 5.0},
        "protocol": {"metric_versions": {"torchmetrics": "1.4"}, "num_images": len(features),
                     "generation_size": [IMAGE_SIZE, IMAGE_SIZE], "eval_size": IMAGE_SIZE,
                     "image_resize": "bicubic", "label_resize": "nearest", "fid_protocol": "pytorch-fid",
                     "fid_extractor_sha256": "a" * 64, "segmenter": "/cache/segmenter.pt",
                     "segmenter_sha256": "b" * 64, "seeds": [0], "wall_time_s": 12.0,
                     "kid_subset_size": 6, "kid_subsets": 20, "label_mapping": None,
                     "segmenter_input_size": "native", "real_set": "val",
                     **(protocol or {})},
        "files": {"fake_features": "fake_features.npy", "real_stats": str(Path(real_stats).resolve()),
                  "per_image_counts": "per_image_counts.npz"},
    }
    (eval_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return run
