"""Image plumbing shared by the evaluation code: [-1, 1] <-> uint8, resizing, PNG files, folders.

Scores are always computed from uint8 images, exactly as they are stored on disk, so a
resumed evaluation that reads its PNGs back scores the same pixels as a fresh one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from spade_bench.errors import EvalError
from spade_bench.io import atomic_write

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def to_uint8(images: Tensor) -> Tensor:
    """float [.., 3, H, W] in [-1, 1] -> uint8, rounded as a PNG writer would."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def from_uint8(images: Tensor) -> Tensor:
    """uint8 [.., 3, H, W] -> float in [-1, 1]."""
    return images.float() / 127.5 - 1


def eval_hw(generation_hw: tuple[int, int], eval_size: int | None) -> tuple[int, int]:
    """The scoring size: `eval_size` on the short side keeping aspect, or the generation size."""
    if eval_size is None:
        return tuple(generation_hw)
    height, width = generation_hw
    if height <= width:
        return eval_size, int(round(eval_size * width / height))
    return int(round(eval_size * height / width)), eval_size


def resize_uint8(images: Tensor, size_hw: Sequence[int], mode: str = "bicubic") -> Tensor:
    """Resize uint8 [N, 3, H, W] images; antialiased when shrinking (as PIL does)."""
    if tuple(images.shape[-2:]) == tuple(size_hw):
        return images
    resized = F.interpolate(images.float(), size=tuple(size_hw), mode=mode, align_corners=False,
                            antialias=True)
    return resized.round().clamp(0, 255).to(torch.uint8)


def resize_labels(labels: Tensor, size_hw: Sequence[int]) -> Tensor:
    """Nearest-neighbour resize of int64 [N, H, W] label maps (labels are never blended)."""
    if tuple(labels.shape[-2:]) == tuple(size_hw):
        return labels
    return F.interpolate(labels[:, None].float(), size=tuple(size_hw), mode="nearest")[:, 0].long()


def save_png(image: Tensor, path: str | Path) -> None:
    """Write one uint8 [3, H, W] image atomically (no half-written PNG after a crash)."""
    array = image.permute(1, 2, 0).cpu().numpy()
    atomic_write(path, lambda f: Image.fromarray(array).save(f, format="PNG"))


def load_image(path: str | Path) -> Tensor:
    """Read an image file as uint8 [3, H, W] RGB."""
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except Image.DecompressionBombError:
        raise EvalError(f"image {path} has more pixels than PIL decodes safely (over {2 * Image.MAX_IMAGE_PIXELS} "
                        f"pixels: a decompression bomb, or a huge photo); remove it, or shrink it below that") from None
    except (OSError, ValueError) as e:
        raise EvalError(f"cannot read image {path}: {e}; delete or replace the file") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name (as pytorch-fid lists them)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvalError(f"image folder {folder} does not exist; pass a folder of .png/.jpg images")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
