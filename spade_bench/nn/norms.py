"""Normalisation layers by name, and the contract every conditioning layer follows.

`NORMS` (spade_bench/names.py) is the one table of 2-d normalisations: SPADE's and CLADE's
parameter-free norm (`generator.param_free_norm`), the discriminator's and encoder's norm
after a conv (`conv_norm`, which also takes "none"), and pix2pixHD's norm all read it, and
so does config validation. A new norm is one entry there naming a callable
`(channels, *, affine)`; `norm_factory` imports it.

A conditioning layer ("cond norm") is what a generator block uses instead of a plain
norm. Blocks receive a factory and never see the layer's settings (timm's `norm_layer`):

    make_cond_norm(channels) -> module;  module(x, segmap, cache) -> Tensor

The output has `channels + make_cond_norm.extra_channels` channels (0 when the attribute
is absent; CLADE with instance edges appends one). `cache` memoises the nearest-resized
segmap per resolution for one forward pass (`resize_segmap`).
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from spade_bench.errors import ConfigError
from spade_bench.names import LAYER_NORMS, NORMS, load  # noqa: F401 - re-exported

NormFactory = Callable[[int], nn.Module]
CondNormFactory = Callable[[int], nn.Module]  # -> module(x, segmap, cache); see the module docstring
SegmapCache = dict[tuple[int, int], Tensor]


def norm_factory(kind: str, *, affine: bool) -> NormFactory:
    """Return `make(channels) -> nn.Module` for the NORMS entry `kind`.

    Args:
        kind: a key of NORMS (syncbatch, batch, instance).
        affine: learn a per-channel scale and shift. SPADE's and CLADE's own norm never do.
    """
    if kind not in NORMS:
        raise ConfigError(f"unknown normalisation {kind!r}; use one of {', '.join(NORMS)}")
    return partial(load(NORMS[kind]), affine=affine)


def param_free_norm(kind: str) -> NormFactory:
    """The parameter-free normalisation inside a conditioning layer: `norm_factory(kind, affine=False)`."""
    return norm_factory(kind, affine=False)


def extra_channels(make_cond_norm: CondNormFactory) -> int:
    """How many channels `make_cond_norm(c)` adds to its input's c (see the module docstring)."""
    return int(getattr(make_cond_norm, "extra_channels", 0))


def resize_segmap(segmap: Tensor, size: tuple[int, int], cache: Optional[SegmapCache] = None) -> Tensor:
    """`segmap` resized to `size` (H, W) with nearest interpolation, memoised in `cache`.

    The cache belongs to one forward pass of one segmap; the caller makes a new dict each
    time, so a stale entry can never be reused for a different segmap.
    """
    size = (int(size[0]), int(size[1]))
    if tuple(segmap.shape[-2:]) == size:
        return segmap
    if cache is not None and size in cache:
        return cache[size]
    resized = F.interpolate(segmap, size=size, mode="nearest")
    if cache is not None:
        cache[size] = resized
    return resized


class Unconditioned(nn.Module):
    """A conditioning layer that ignores the segmap: the parameter-free norm alone.

    The decoder built with it is the "bare decoder" over which the CLADE paper counts the
    extra parameters and computation of SPADE and CLADE.
    """

    def __init__(self, channels: int, *, norm: NormFactory):
        super().__init__()
        self.param_free_norm = norm(channels)

    def forward(self, x: Tensor, segmap: Tensor, cache: Optional[SegmapCache] = None) -> Tensor:
        return self.param_free_norm(x)
