"""Variant: Adam beta2 = 0.999, as the SPADE paper states, instead of the code's 0.9.

The paper gives Adam with beta1 = 0, beta2 = 0.999 and TTUR learning rates; the released
code uses beta2 = 0.9 whenever TTUR is on, overriding --beta2 without a word (SPADE
issue #50). Here the betas are plain config that TTUR does not touch, so this variant
differs from `spade` in beta2 alone.
"""
from dataclasses import replace

from spade_bench.variants import register_variant


@register_variant("spade-paper-adam")
def spade_paper_adam(base):
    """SPADE with Adam beta2 = 0.999 as the paper states (the code uses 0.9; SPADE issue #50)."""
    return replace(base, optim=replace(base.optim, beta2=0.999))
