"""Ablation: 1x1 kernels in SPADE's MLP (paper Table 3 found this hurts).

With a 1x1 kernel gamma and beta depend on the label at each pixel alone, not on its
neighbourhood, so boundaries carry no context.
"""
from dataclasses import replace

from spade_bench.variants import register_variant


@register_variant("spade-k1")
def spade_k1(base):
    """SPADE with 1x1 kernels in its MLP (no spatial context for gamma and beta)."""
    return replace(base, generator=replace(base.generator, spade_kernel=1))
