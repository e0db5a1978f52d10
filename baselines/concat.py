"""Ablation: the paper's "decoder w/ Concat" (Table 3).

Same decoder shape as SPADE, but the nearest-resized segmap is concatenated to each
residual block's input instead of modulating a parameter-free norm; the norms keep their
learned affine parameters. Tests whether SPADE's gain comes from modulation rather than
from simply seeing the segmap at every scale.
"""
from dataclasses import replace

from spade_bench.variants import register_variant


@register_variant("concat")
def concat(base):
    """SPADE-shaped decoder with the segmap concatenated to every block input (affine norms)."""
    return replace(base, generator=replace(base.generator, arch="concat"))
