"""Residual blocks of the generators, and the conv + norm helper that D and E share.

- `CondResnetBlock`: the original SPADE block (REFERENCE section 2) around any
  conditioning layer, injected as `cond_norm` (contract in nn/norms.py); the block never
  sees the layer's settings.
- `SPADEResnetBlock`: `CondResnetBlock` with SPADE layers, built from SPADE's settings.
- `ConcatResnetBlock`: the same block shape, but the segmap is concatenated to the block
  input and the norms keep learned affine parameters (the paper's "decoder w/ Concat").
- `ResnetBlock`: pix2pixHD's reflection-padded residual block.
- `conv_norm`: the original's `get_nonspade_norm_layer` (optional spectral norm, then a
  norm layer with the conv bias removed), without its crash for a norm name that does not
  start with "spectral" (SPADE issue #58).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spade_bench.errors import ConfigError
from spade_bench.nn.norms import (LAYER_NORMS, CondNormFactory, NormFactory, SegmapCache, extra_channels,
                                  norm_factory, resize_segmap)
from spade_bench.nn.spade import make_spade
from spade_bench.nn.spectral import spectral_norm as _spectral_norm


def spectral(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Wrap `module`'s weight in spectral normalisation when `enabled`."""
    return _spectral_norm(module) if enabled else module


def conv_norm(conv: nn.Module, *, norm: str, spectral_norm: bool) -> nn.Module:
    """`conv` with optional spectral norm, followed by a norm layer unless norm is "none".

    As in the original, instance norm has no affine parameters, batch norm has them, and
    the conv's bias is dropped when a norm follows (the norm subtracts it anyway).

    Args:
        conv: a Conv2d or ConvTranspose2d.
        norm: a NORMS entry (instance, batch, syncbatch) or none.
        spectral_norm: wrap the conv's weight in spectral normalisation.
    """
    if norm not in LAYER_NORMS:
        raise ConfigError(f"unknown norm {norm!r}; use one of {', '.join(LAYER_NORMS)}")
    conv = spectral(conv, spectral_norm)
    if norm == "none":
        return conv
    if getattr(conv, "bias", None) is not None:
        conv.bias = None
    layer = norm_factory(norm, affine=norm != "instance")(conv.out_channels)
    return nn.Sequential(conv, layer)


class CondResnetBlock(nn.Module):
    """cond -> LReLU -> conv3x3 -> cond -> LReLU -> conv3x3, plus a (learned) shortcut.

    SPADE's residual block (REFERENCE section 2) with the conditioning layer injected.

    Args:
        fin, fout: input and output channels; the middle width is min(fin, fout).
        cond_norm: `make(channels) -> module(x, segmap, cache)` (nn/norms.py), e.g.
            `make_spade(...)` or `make_clade(...)`.
        spectral_norm: spectral norm on conv_0, conv_1 and conv_s, as the original.
    """

    def __init__(self, fin: int, fout: int, *, cond_norm: CondNormFactory, spectral_norm: bool = True):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        extra = extra_channels(cond_norm)
        # Registration order (conv_0, conv_1, norm_0, norm_1, conv_s, norm_s) is the original's:
        # it fixes the parameter order that optimiser states and random draws follow.
        self.conv_0 = spectral(nn.Conv2d(fin + extra, fmiddle, 3, padding=1), spectral_norm)
        self.conv_1 = spectral(nn.Conv2d(fmiddle + extra, fout, 3, padding=1), spectral_norm)
        self.norm_0 = cond_norm(fin)
        self.norm_1 = cond_norm(fmiddle)
        if self.learned_shortcut:
            self.conv_s = spectral(nn.Conv2d(fin + extra, fout, 1, bias=False), spectral_norm)
            self.norm_s = cond_norm(fin)

    def forward(self, x: Tensor, segmap: Tensor, cache: Optional[SegmapCache] = None) -> Tensor:
        if self.learned_shortcut:
            # No activation on the shortcut, as in the original.
            x_s = self.conv_s(self.norm_s(x, segmap, cache))
        else:
            x_s = x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, segmap, cache), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, segmap, cache), 0.2))
        return x_s + dx


class SPADEResnetBlock(CondResnetBlock):
    """`CondResnetBlock` with SPADE layers (the original SPADE block).

    Args:
        fin, fout: input and output channels; the middle width is min(fin, fout).
        label_channels: segmap channels.
        norm: parameter-free norm factory for the SPADE layers.
        hidden, kernel_size, modulation, fused_modulation: passed to each SPADE layer.
        spectral_norm: spectral norm on conv_0, conv_1 and conv_s, as the original.
    """

    def __init__(self, fin: int, fout: int, label_channels: int, *, norm: NormFactory,
                 hidden: int = 128, kernel_size: int = 3, modulation: str = "one_plus_gamma",
                 fused_modulation: bool = False, spectral_norm: bool = True):
        cond_norm = make_spade(label_channels, norm=norm, hidden=hidden, kernel_size=kernel_size,
                               modulation=modulation, fused=fused_modulation)
        super().__init__(fin, fout, cond_norm=cond_norm, spectral_norm=spectral_norm)


class ConcatResnetBlock(nn.Module):
    """SPADEResnetBlock's shape with the segmap concatenated to the block input.

    Every place where the SPADE block reads its input x (norm_0 and norm_s) it reads
    cat(x, nearest-resized segmap) instead, through an ordinary norm that keeps its learned
    affine parameters; there is no modulation. The middle norm sees only features.

    Args:
        fin, fout: input and output feature channels (the segmap adds label_channels).
        label_channels: segmap channels.
        norm: affine norm factory, e.g. `norm_factory("batch", affine=True)`.
        spectral_norm: spectral norm on conv_0, conv_1 and conv_s.
    """

    def __init__(self, fin: int, fout: int, label_channels: int, *, norm: NormFactory,
                 spectral_norm: bool = True):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        fin_with_labels = fin + label_channels
        self.norm_0 = norm(fin_with_labels)
        self.conv_0 = spectral(nn.Conv2d(fin_with_labels, fmiddle, 3, padding=1), spectral_norm)
        self.norm_1 = norm(fmiddle)
        self.conv_1 = spectral(nn.Conv2d(fmiddle, fout, 3, padding=1), spectral_norm)
        if self.learned_shortcut:
            self.norm_s = norm(fin_with_labels)
            self.conv_s = spectral(nn.Conv2d(fin_with_labels, fout, 1, bias=False), spectral_norm)

    def forward(self, x: Tensor, segmap: Tensor, cache: Optional[SegmapCache] = None) -> Tensor:
        seg = resize_segmap(segmap, x.shape[-2:], cache).to(x.dtype)
        x_and_labels = torch.cat([x, seg], dim=1)
        x_s = self.conv_s(self.norm_s(x_and_labels)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x_and_labels), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx), 0.2))
        return x_s + dx


class ResnetBlock(nn.Module):
    """pix2pixHD residual block: x + [pad, conv, norm, act, pad, conv, norm](x).

    Args:
        channels: input and output channels.
        norm: a NORMS entry or none (see `conv_norm`).
        spectral_norm: spectral norm on both convolutions.
        kernel_size: odd kernel size (3 in the original).
    """

    def __init__(self, channels: int, *, norm: str = "instance", spectral_norm: bool = False,
                 kernel_size: int = 3):
        super().__init__()
        pad = (kernel_size - 1) // 2
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(pad),
            conv_norm(nn.Conv2d(channels, channels, kernel_size), norm=norm, spectral_norm=spectral_norm),
            nn.ReLU(),
            nn.ReflectionPad2d(pad),
            conv_norm(nn.Conv2d(channels, channels, kernel_size), norm=norm, spectral_norm=spectral_norm),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_block(x)
