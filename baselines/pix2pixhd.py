"""Baseline: the pix2pixHD global generator with the segmap as its input.

conv7x7 -> 4 stride-2 downsamplings -> 9 residual blocks -> 4 transposed-conv
upsamplings -> conv7x7 -> tanh, with InstanceNorm. The segmap enters once, at the input,
so normalisation can wash uniform regions out (the paper's Fig. 3 argument). The original
SPADE repo crashes with this generator and instance norm (issue #58); ours does not.
"""
from dataclasses import replace

from spade_bench.variants import register_variant


@register_variant("pix2pixhd")
def pix2pixhd(base):
    """pix2pixHD global generator (encoder-resnet-decoder, spectral + instance norm), segmap in at the input."""
    return replace(base, generator=replace(base.generator, arch="pix2pixhd", pix2pixhd_norm="instance"))
