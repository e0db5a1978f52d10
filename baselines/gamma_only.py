"""Ablation: modulate with gamma instead of (1 + gamma), as the paper's equation writes it.

The original code adds 1 so that a freshly initialised SPADE (gamma ~ 0) starts as the
identity on the normalised features; the paper's Eq. 1 has plain gamma. Everything else
is identical to `spade`, so the two differ exactly where gamma enters.
"""
from dataclasses import replace

from spade_bench.variants import register_variant


@register_variant("spade-gamma")
def spade_gamma(base):
    """SPADE with gamma modulation (paper's Eq. 1) instead of the code's (1 + gamma)."""
    return replace(base, generator=replace(base.generator, modulation="gamma"))
