"""Variant: SPADE with the VAE style encoder and KL loss (multimodal synthesis).

The generator starts from z instead of the downsampled segmap; at training time z comes
from encoding the real photo, so at test time a style image sets the look.
"""
from dataclasses import replace

from spade_bench.variants import register_variant


@register_variant("spade-vae")
def spade_vae(base):
    """SPADE with the style encoder and KL loss: z from a photo sets the look."""
    return replace(base, generator=replace(base.generator, use_vae=True))
