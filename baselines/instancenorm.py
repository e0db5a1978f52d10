"""Ablation: instance norm as SPADE's parameter-free normalisation.

The original defaults to sync-batch norm; instance norm makes each sample's statistics
independent of the batch, at the price of normalising away per-image global tone.
"""
from dataclasses import replace

from spade_bench.variants import register_variant


@register_variant("spade-instancenorm")
def spade_instancenorm(base):
    """SPADE with instance norm as the parameter-free norm instead of sync-batch norm."""
    return replace(base, generator=replace(base.generator, param_free_norm="instance"))
