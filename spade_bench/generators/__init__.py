"""Generators built from a RunConfig, through two tables that config validation reads too.

The tables live in spade_bench/names.py (torch-free, so validating a config loads no
network code); their entries name the builders below, which are imported only to build:

- `GENERATORS`: generator layouts (`generator.arch`): SPADE's decoder, the same decoder
  with the segmap concatenated to each block ("concat"), and pix2pixHD.
- `COND_NORMS`: conditioning layers (`generator.cond_norm`) for the blocks of the "spade"
  layout. An entry turns the run config into `make(channels) -> module(x, segmap, cache)`
  (nn/norms.py); the blocks never see the layer's settings.

A new conditioning layer is one file in nn/, a builder here and one entry in COND_NORMS; a
new layout is a builder and one entry in GENERATORS.
"""
from __future__ import annotations

from torch import nn

from spade_bench.config import RunConfig, check_generator_config
from spade_bench.generators.pix2pixhd import Pix2PixHDGenerator
from spade_bench.generators.spade import ConcatGenerator, ResnetDecoderGenerator, SPADEGenerator, conditioned_blocks
from spade_bench.names import COND_NORMS, GENERATORS, UPSAMPLING_LAYERS, Layout, load
from spade_bench.nn.clade import make_clade
from spade_bench.nn.init import init_weights
from spade_bench.nn.norms import CondNormFactory, Unconditioned, param_free_norm
from spade_bench.nn.spade import make_spade

# ----------------------------------------------------------------------------- COND_NORMS entries


def spade_layers(cfg: RunConfig) -> CondNormFactory:
    """SPADE: gamma and beta from a conv MLP on the segmap (the original)."""
    g = cfg.generator
    return make_spade(cfg.data.semantic_channels, norm=param_free_norm(g.param_free_norm), hidden=g.spade_hidden,
                      kernel_size=g.spade_kernel, modulation=g.modulation, fused=g.fused_modulation)


def clade_layers(cfg: RunConfig) -> CondNormFactory:
    """CLADE: gamma and beta looked up per class (Tan et al. 2020)."""
    d = cfg.data
    return make_clade(d.label_nc + int(d.contain_dontcare), norm=param_free_norm(cfg.generator.param_free_norm),
                      instance_edges=d.use_instance)


def unconditioned_layers(cfg: RunConfig) -> CondNormFactory:
    """The parameter-free norm alone: the segmap enters only at the input."""
    return lambda channels: Unconditioned(channels, norm=param_free_norm(cfg.generator.param_free_norm))


# ----------------------------------------------------------------------------- GENERATORS entries


def decoder(cfg: RunConfig) -> nn.Module:
    """SPADE's decoder with the `generator.cond_norm` layers."""
    g = cfg.generator
    return ResnetDecoderGenerator(
        cfg.data.semantic_channels, image_size=cfg.data.image_size,
        make_block=conditioned_blocks(load(COND_NORMS[g.cond_norm])(cfg), spectral_norm=g.spectral_norm),
        ngf=g.ngf, num_upsampling_layers=g.num_upsampling_layers, use_vae=g.use_vae, z_dim=g.z_dim)


def concat_decoder(cfg: RunConfig) -> nn.Module:
    """The same decoder with the segmap concatenated to each block's input."""
    g = cfg.generator
    return ConcatGenerator(cfg.data.semantic_channels, image_size=cfg.data.image_size, ngf=g.ngf,
                           num_upsampling_layers=g.num_upsampling_layers, norm=g.param_free_norm,
                           spectral_norm=g.spectral_norm)


def pix2pixhd(cfg: RunConfig) -> nn.Module:
    """pix2pixHD's global generator."""
    g = cfg.generator
    return Pix2PixHDGenerator(cfg.data.semantic_channels, ngf=g.ngf, downsamples=g.pix2pixhd_downsamples,
                              blocks=g.pix2pixhd_blocks, norm=g.pix2pixhd_norm, spectral_norm=g.spectral_norm,
                              image_size=cfg.data.image_size)


def build_generator(cfg: RunConfig) -> nn.Module:
    """The generator for `cfg` (a RunConfig), initialised as the original (xavier, 0.02).

    `G(segmap, z=None) -> [B, 3, H, W]` in [-1, 1]; with use_vae and z None, z ~ N(0, I).
    """
    check_generator_config(cfg.generator)
    return init_weights(load(GENERATORS[cfg.generator.arch].build)(cfg))


__all__ = ["build_generator", "check_generator_config", "COND_NORMS", "GENERATORS", "Layout",
           "UPSAMPLING_LAYERS", "SPADEGenerator", "ConcatGenerator", "Pix2PixHDGenerator",
           "ResnetDecoderGenerator", "spade_layers", "clade_layers", "unconditioned_layers", "decoder",
           "concat_decoder", "pix2pixhd"]
