"""Generators: SPADE, the Concat ablation and pix2pixHD, built from a RunConfig."""
from __future__ import annotations

from torch import nn

from spade_bench.errors import ConfigError
from spade_bench.generators.pix2pixhd import Pix2PixHDGenerator
from spade_bench.generators.spade import ConcatGenerator, ResnetDecoderGenerator, SPADEGenerator
from spade_bench.nn.init import init_weights


def build_generator(cfg) -> nn.Module:
    """The generator for `cfg` (a RunConfig), initialised as the original (xavier, 0.02).

    `G(segmap, z=None) -> [B, 3, H, W]` in [-1, 1]; with use_vae and z None, z ~ N(0, I).
    """
    g = cfg.generator
    label_channels = cfg.data.semantic_channels
    image_size = cfg.data.image_size
    if g.use_vae and g.arch != "spade":
        raise ConfigError("generator.use_vae needs generator.arch=spade")
    if g.arch == "spade":
        net: nn.Module = SPADEGenerator(
            label_channels, image_size=image_size, ngf=g.ngf, num_upsampling_layers=g.num_upsampling_layers,
            norm=g.param_free_norm, modulation=g.modulation, spade_hidden=g.spade_hidden,
            spade_kernel=g.spade_kernel, spectral_norm=g.spectral_norm, use_vae=g.use_vae, z_dim=g.z_dim,
            fused_modulation=g.fused_modulation)
    elif g.arch == "concat":
        net = ConcatGenerator(
            label_channels, image_size=image_size, ngf=g.ngf, num_upsampling_layers=g.num_upsampling_layers,
            norm=g.param_free_norm, spectral_norm=g.spectral_norm)
    elif g.arch == "pix2pixhd":
        net = Pix2PixHDGenerator(
            label_channels, ngf=g.ngf, downsamples=g.pix2pixhd_downsamples, blocks=g.pix2pixhd_blocks,
            norm=g.pix2pixhd_norm, spectral_norm=g.spectral_norm, image_size=image_size)
    else:
        raise ConfigError(f"unknown generator.arch {g.arch!r}; use spade, concat or pix2pixhd")
    return init_weights(net)


__all__ = ["build_generator", "SPADEGenerator", "ConcatGenerator", "Pix2PixHDGenerator",
           "ResnetDecoderGenerator"]
