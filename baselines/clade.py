"""Variant: CLADE, class-adaptive normalisation (Tan et al., arXiv 2004.02867), in SPADE's decoder.

Each conditioning layer looks gamma and beta up per class from a learned table instead of
computing them from the segmap with a conv MLP, so they are constant inside a class
region. The CLADE paper argues that SPADE's gain comes from this semantic awareness rather
than from spatial adaptiveness, at a fraction of SPADE's extra parameters and compute.
Everything else (decoder, parameter-free norm, D, losses, schedule) is SPADE's. The layer
is spade_bench/nn/clade.py.
"""
from dataclasses import replace

from spade_bench.variants import register_variant


@register_variant("clade")
def clade(base):
    """SPADE's decoder with CLADE layers: gamma and beta looked up per class, not from a conv MLP."""
    return replace(base, generator=replace(base.generator, cond_norm="clade"))
