"""Paired transforms: one set of resize, crop and flip parameters for image, label and instance.

Photos are resized with bicubic or bilinear interpolation (data.image_resize); label and
instance maps only ever with nearest neighbour, so no new label values appear.

preprocess (as in the original, for square crops):
- resize_and_crop: resize to load_size (height load_size / aspect_ratio), random crop to
  image_size;
- fixed: resize to image_size;
- none: keep the stored size.
The train split draws the crop and flip from torch's global RNG (which the trainer seeds per
sample); the val split resizes to image_size with no crop and no flip.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch
from PIL import Image

from spade_bench.config import DataConfig

_RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}


@dataclass(frozen=True)
class TransformParams:
    """One sample's geometry.

    Args:
        resize: (H, W) to resize to first, or None to keep the stored size.
        crop: (top, left, H, W) of the crop after resizing, or None.
        flip: mirror left-right after cropping.
    """

    resize: Optional[tuple[int, int]]
    crop: Optional[tuple[int, int, int, int]]
    flip: bool


def transform_params(data_cfg: DataConfig, stored_size: tuple[int, int], augment: bool) -> TransformParams:
    """Parameters for a sample stored at (H, W); random ones come from torch's global RNG."""
    target = data_cfg.image_size
    if data_cfg.preprocess == "none":
        resize, crop = None, None
    elif not augment or data_cfg.preprocess == "fixed":
        resize, crop = target, None
    else:
        load = (int(round(data_cfg.load_size / data_cfg.aspect_ratio)), data_cfg.load_size)
        top = int(torch.randint(0, load[0] - target[0] + 1, ()).item()) if load[0] > target[0] else 0
        left = int(torch.randint(0, load[1] - target[1] + 1, ()).item()) if load[1] > target[1] else 0
        resize, crop = load, (top, left, min(target[0], load[0]), min(target[1], load[1]))
    flip = bool(augment and data_cfg.flip and torch.rand(()).item() < 0.5)
    if resize == tuple(stored_size):
        resize = None
    return TransformParams(resize, crop, flip)


def transform_image(image: Union[Image.Image, np.ndarray], params: TransformParams,
                    image_resize: str = "bicubic") -> np.ndarray:
    """A photo (PIL or uint8 [H, W, 3]) -> transformed uint8 [H, W, 3]."""
    if params.resize is not None:
        pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
        image = pil.resize((params.resize[1], params.resize[0]), _RESAMPLE[image_resize])
    # A copy: PIL's buffer is read-only, and torch wants to own a writable one.
    array = np.array(image) if isinstance(image, Image.Image) else image
    return _crop_flip(array, params)


def transform_map(array: np.ndarray, params: TransformParams) -> np.ndarray:
    """A label or instance map [H, W] -> transformed with nearest-neighbour resizing only."""
    if params.resize is not None:
        array = resize_nearest(array, params.resize)
    return _crop_flip(array, params)


def resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of [H, W, ...] to size (H, W), pixel for pixel as PIL's NEAREST
    (which the original code used for labels), for any integer dtype."""
    height, width = array.shape[:2]
    return array[_nearest_source(height, size[0])[:, None], _nearest_source(width, size[1])[None, :]]


def _nearest_source(length_in: int, length_out: int) -> np.ndarray:
    # PIL (ImagingScaleAffine) starts at half a step and adds the step in double precision;
    # summing in the same order reproduces its rounding at exact ties.
    step = length_in / length_out
    positions = np.full(length_out, step)
    positions[0] = 0.5 * step
    return np.minimum(np.add.accumulate(positions).astype(np.intp), length_in - 1)


def _crop_flip(array: np.ndarray, params: TransformParams) -> np.ndarray:
    if params.crop is not None:
        top, left, height, width = params.crop
        array = array[top:top + height, left:left + width]
    if params.flip:
        array = array[:, ::-1]
    return np.ascontiguousarray(array)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 [3, H, W] in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
