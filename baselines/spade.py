"""Core SPADE: the original implementation's defaults, unchanged (the base every variant edits)."""
from __future__ import annotations

from spade_bench.variants import register_variant


@register_variant("spade")
def spade(base):
    """SPADE generator with (1 + gamma) modulation, sync-batch norm, 3x3 SPADE kernel (original code)."""
    return base
