"""Label colours: sample grids and figures (`colorize`), and decoding colour-PNG label maps.

The default colour map is the original SPADE one (`util.labelcolormap`): the Cityscapes
colours for 35 classes, otherwise the PASCAL bit-interleaved map with class 0 given a
colour. A format that declares a palette (data/formats/: the synthetic scenes, CMP Facades,
Cityscapes) is drawn in it when label_nc matches its length.
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch

from spade_bench.config import DataConfig
from spade_bench.data.formats import cityscapes, dataset_format, facades

# The original's colour map draws 35 classes in the Cityscapes colours (their format's palette).
CITYSCAPES_PALETTE = np.array(cityscapes.FORMAT.palette, dtype=np.uint8)
FACADES_PALETTE = np.array(facades.FORMAT.palette, dtype=np.uint8)


def label_colormap(num_classes: int) -> np.ndarray:
    """uint8 [num_classes, 3]: the original SPADE colour map."""
    if num_classes == len(CITYSCAPES_PALETTE):
        return CITYSCAPES_PALETTE.copy()
    ids = np.arange(num_classes, dtype=np.int64) + 1          # "let's give 0 a color"
    cmap = np.zeros((num_classes, 3), dtype=np.int64)
    for bit in range(7):
        for channel in range(3):
            cmap[:, channel] |= ((ids >> channel) & 1) << (7 - bit)
        ids >>= 3
    return cmap.astype(np.uint8)


# Candidates for the don't-care colour, in order: black (SPADE's "unlabelled"), then colours
# no built-in palette gives a class.
DONT_CARE_COLOURS = ((0, 0, 0), (255, 255, 255), (128, 128, 128), (64, 64, 64), (192, 192, 192))


def with_dont_care_colour(classes: np.ndarray) -> np.ndarray:
    """uint8 [K + 1, 3]: class colours plus a don't-care colour that no class uses."""
    classes = np.asarray(classes, dtype=np.uint8)
    used = {tuple(int(v) for v in c) for c in classes}
    colour = next((c for c in DONT_CARE_COLOURS if c not in used), None)
    if colour is None:  # every candidate taken: the first RGB value no class uses
        colour = next((r, g, b) for r in range(256) for g in range(256) for b in range(256)
                      if (r, g, b) not in used)
    return np.concatenate([classes, np.array([colour], dtype=np.uint8)])


def dataset_palette(data_cfg: DataConfig) -> np.ndarray:
    """uint8 [label_nc (+1 with contain_dontcare), 3]: the colours a dataset's labels are drawn
    in; the don't-care index label_nc gets its own colour, distinct from every class."""
    n = data_cfg.label_nc
    own = dataset_format(data_cfg.dataset).palette
    classes = np.array(own, dtype=np.uint8) if own is not None and n == len(own) else label_colormap(n)
    return with_dont_care_colour(classes) if data_cfg.contain_dontcare else classes


def colorize_labels(label: Union[torch.Tensor, np.ndarray], data_cfg: DataConfig) -> Union[torch.Tensor, np.ndarray]:
    """`colorize` with the dataset's palette, don't-care included: what grids and figures draw."""
    return colorize(label, data_cfg.label_nc + int(data_cfg.contain_dontcare), palette=dataset_palette(data_cfg))


def colorize(label: Union[torch.Tensor, np.ndarray], num_classes: int,
             palette: Optional[np.ndarray] = None) -> Union[torch.Tensor, np.ndarray]:
    """Label map [..., H, W] (or [B, 1, H, W]) -> uint8 colours [..., 3, H, W] ([B, 3, H, W]).

    Values outside 0..num_classes-1 (such as the don't-care index) are drawn black. A torch
    input gives a tensor on the same device; a NumPy input gives an array.
    palette: uint8 [>= num_classes, 3]; default `label_colormap(num_classes)`.
    """
    colours = label_colormap(num_classes) if palette is None else np.asarray(palette, dtype=np.uint8)[:num_classes]
    if len(colours) < num_classes:
        raise ValueError(f"palette has {len(colours)} colours, fewer than num_classes={num_classes}")
    table = np.concatenate([colours, np.zeros((1, 3), dtype=np.uint8)])   # last entry: out of range
    if isinstance(label, np.ndarray):
        if label.ndim == 4 and label.shape[1] == 1:
            label = label[:, 0]
        index = np.where((label >= 0) & (label < num_classes), label, num_classes).astype(np.intp)
        return np.moveaxis(table[index], -1, -3)
    if label.dim() == 4 and label.shape[1] == 1:
        label = label[:, 0]
    label = label.long()
    index = torch.where((label >= 0) & (label < num_classes), label, torch.full_like(label, num_classes))
    return torch.from_numpy(table).to(label.device)[index].movedim(-1, -3)


def decode_colour_label(rgb: np.ndarray, palette: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Colour label map uint8 [H, W, 3] -> (class indices int64 [H, W], colours not in the palette).

    Unknown colours get index -1.
    """
    key = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    palette = np.asarray(palette, dtype=np.int64)
    palette_keys = (palette[:, 0] << 16) | (palette[:, 1] << 8) | palette[:, 2]
    # A colour used twice in a palette (Cityscapes draws several classes black) maps to its first class.
    unique_keys, first = np.unique(palette_keys, return_index=True)
    position = np.clip(np.searchsorted(unique_keys, key), 0, len(unique_keys) - 1)
    found = unique_keys[position] == key
    index = np.where(found, first[position], -1).astype(np.int64)
    unknown = [(int(k >> 16) & 255, int(k >> 8) & 255, int(k) & 255) for k in np.unique(key[~found])]
    return index, unknown
