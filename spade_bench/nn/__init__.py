"""Building blocks shared by the networks: the NORMS table, conditioning layers (SPADE,
CLADE), residual blocks, init."""
from __future__ import annotations

from torch import nn

from spade_bench.nn.blocks import (ConcatResnetBlock, CondResnetBlock, ResnetBlock, SPADEResnetBlock, conv_norm,
                                   spectral)
from spade_bench.nn.clade import CLADE, make_clade
from spade_bench.nn.init import init_weights
from spade_bench.nn.norms import NORMS, Unconditioned, norm_factory, param_free_norm, resize_segmap
from spade_bench.nn.spade import SPADE, make_spade


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters in `module` (each shared tensor counted once).

    Spectral norm keeps one parameter per wrapped weight (its `original`); its u and v
    vectors are buffers, so counts match the original code's.
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "SPADE", "make_spade", "CLADE", "make_clade", "Unconditioned", "NORMS", "CondResnetBlock",
    "SPADEResnetBlock", "ConcatResnetBlock", "ResnetBlock", "conv_norm", "spectral",
    "init_weights", "norm_factory", "param_free_norm", "resize_segmap", "count_parameters",
]
