"""Building blocks shared by the networks: SPADE, norm factories, residual blocks, init."""
from __future__ import annotations

from torch import nn

from spade_bench.nn.blocks import ConcatResnetBlock, ResnetBlock, SPADEResnetBlock, conv_norm, spectral
from spade_bench.nn.init import init_weights
from spade_bench.nn.spade import SPADE, norm_factory, param_free_norm, resize_segmap


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters in `module` (each shared tensor counted once).

    Spectral norm keeps one parameter per wrapped weight (its `original`); its u and v
    vectors are buffers, so counts match the original code's.
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "SPADE", "SPADEResnetBlock", "ConcatResnetBlock", "ResnetBlock", "conv_norm", "spectral",
    "init_weights", "norm_factory", "param_free_norm", "resize_segmap", "count_parameters",
]
