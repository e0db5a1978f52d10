"""colorize and the colour maps (the original SPADE ones), and colour-label decoding."""
from __future__ import annotations

import numpy as np
import torch

from spade_bench.config import DataConfig
from spade_bench.data import SYNTHETIC_PALETTE, colorize, dataset_palette, label_colormap
from spade_bench.data.palette import CITYSCAPES_PALETTE, decode_colour_label


def pascal_colour(index: int) -> tuple[int, int, int]:
    """The original uint82bin loop, for one class."""
    r = g = b = 0
    code = index + 1
    for j in range(7):
        bits = format(code, "08b")
        r ^= int(bits[-1]) << (7 - j)
        g ^= int(bits[-2]) << (7 - j)
        b ^= int(bits[-3]) << (7 - j)
        code >>= 3
    return r, g, b


def test_label_colormap_is_the_original():
    cmap = label_colormap(151)
    assert cmap.shape == (151, 3) and cmap.dtype == np.uint8
    for index in (0, 1, 2, 7, 64, 150):
        assert tuple(cmap[index]) == pascal_colour(index)
    assert np.array_equal(label_colormap(35), CITYSCAPES_PALETTE)
    assert tuple(label_colormap(35)[7]) == (128, 64, 128)              # road


def test_colorize_torch_and_numpy():
    label = torch.tensor([[[0, 1], [2, 9]], [[1, 1], [-1, 0]]])
    out = colorize(label, 3)
    assert out.shape == (2, 3, 2, 2) and out.dtype == torch.uint8
    cmap = label_colormap(3)
    assert tuple(out[0, :, 0, 1].tolist()) == tuple(cmap[1])
    assert out[0, :, 1, 1].sum() == 0 and out[1, :, 1, 0].sum() == 0   # out of range: black
    assert torch.equal(colorize(label[:, None], 3), out)                # [B, 1, H, W] too
    assert np.array_equal(colorize(label.numpy(), 3), out.numpy())
    assert colorize(label[0], 3).shape == (3, 2, 2)


def test_dataset_palettes():
    assert np.array_equal(dataset_palette(DataConfig()), SYNTHETIC_PALETTE)
    assert len(dataset_palette(DataConfig(dataset="ade20k", label_nc=150))) == 150
    label = torch.arange(10).reshape(1, 2, 5)
    coloured = colorize(label, 10, palette=SYNTHETIC_PALETTE)
    assert tuple(coloured[0, :, 0, 0].tolist()) == tuple(SYNTHETIC_PALETTE[0])


def test_decode_colour_label_round_trip():
    palette = label_colormap(6)
    index = np.random.default_rng(0).integers(0, 6, (5, 7))
    decoded, unknown = decode_colour_label(palette[index], palette)
    assert np.array_equal(decoded, index) and unknown == []
    rgb = palette[index].copy()
    rgb[0, 0] = (9, 9, 9)
    decoded, unknown = decode_colour_label(rgb, palette)
    assert decoded[0, 0] == -1 and unknown == [(9, 9, 9)]
