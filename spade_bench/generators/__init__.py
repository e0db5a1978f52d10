"""Generators built from a RunConfig, through two tables that config validation reads too.

- `GENERATORS`: generator layouts (`generator.arch`): SPADE's decoder, the same decoder
  with the segmap concatenated to each block ("concat"), and pix2pixHD.
- `COND_NORMS`: conditioning layers (`generator.cond_norm`) for the blocks of the "spade"
  layout. An entry turns the run config into `make(channels) -> module(x, segmap, cache)`
  (nn/norms.py); the blocks never see the layer's settings.

A new conditioning layer is one file in nn/ plus one entry in COND_NORMS; a new layout is
one entry in GENERATORS.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from spade_bench.errors import ConfigError
from spade_bench.generators.pix2pixhd import Pix2PixHDGenerator
from spade_bench.generators.spade import (UPSAMPLING_LAYERS, ConcatGenerator, ResnetDecoderGenerator,
                                          SPADEGenerator, conditioned_blocks)
from spade_bench.nn.clade import make_clade
from spade_bench.nn.init import init_weights
from spade_bench.nn.norms import CondNormFactory, Unconditioned, param_free_norm
from spade_bench.nn.spade import make_spade

RunConfig = Any  # spade_bench.config.RunConfig; not imported, since config imports these tables


def _spade(cfg: RunConfig) -> CondNormFactory:
    g = cfg.generator
    return make_spade(cfg.data.semantic_channels, norm=param_free_norm(g.param_free_norm), hidden=g.spade_hidden,
                      kernel_size=g.spade_kernel, modulation=g.modulation, fused=g.fused_modulation)


def _clade(cfg: RunConfig) -> CondNormFactory:
    d = cfg.data
    return make_clade(d.label_nc + int(d.contain_dontcare), norm=param_free_norm(cfg.generator.param_free_norm),
                      instance_edges=d.use_instance)


def _unconditioned(cfg: RunConfig) -> CondNormFactory:
    return lambda channels: Unconditioned(channels, norm=param_free_norm(cfg.generator.param_free_norm))


COND_NORMS: dict[str, Callable[[RunConfig], CondNormFactory]] = {
    "spade": _spade,          # SPADE: gamma, beta from a conv MLP on the segmap (the original)
    "clade": _clade,          # CLADE: gamma, beta looked up per class (Tan et al. 2020)
    "none": _unconditioned,   # the parameter-free norm alone: the segmap enters only at the input
}


@dataclass(frozen=True)
class Layout:
    """A generator layout.

    Args:
        build: `build(cfg) -> nn.Module`, before weight initialisation.
        conditioned: its blocks take `generator.cond_norm`, and it can start from z (use_vae).
        upsampled: its input size is the image size / 2^n, n from `generator.num_upsampling_layers`.
    """

    build: Callable[[RunConfig], nn.Module]
    conditioned: bool
    upsampled: bool


def _decoder(cfg: RunConfig) -> nn.Module:
    g = cfg.generator
    return ResnetDecoderGenerator(
        cfg.data.semantic_channels, image_size=cfg.data.image_size,
        make_block=conditioned_blocks(COND_NORMS[g.cond_norm](cfg), spectral_norm=g.spectral_norm),
        ngf=g.ngf, num_upsampling_layers=g.num_upsampling_layers, use_vae=g.use_vae, z_dim=g.z_dim)


def _concat(cfg: RunConfig) -> nn.Module:
    g = cfg.generator
    return ConcatGenerator(cfg.data.semantic_channels, image_size=cfg.data.image_size, ngf=g.ngf,
                           num_upsampling_layers=g.num_upsampling_layers, norm=g.param_free_norm,
                           spectral_norm=g.spectral_norm)


def _pix2pixhd(cfg: RunConfig) -> nn.Module:
    g = cfg.generator
    return Pix2PixHDGenerator(cfg.data.semantic_channels, ngf=g.ngf, downsamples=g.pix2pixhd_downsamples,
                              blocks=g.pix2pixhd_blocks, norm=g.pix2pixhd_norm, spectral_norm=g.spectral_norm,
                              image_size=cfg.data.image_size)


GENERATORS: dict[str, Layout] = {
    "spade": Layout(_decoder, conditioned=True, upsampled=True),       # SPADE's decoder
    "concat": Layout(_concat, conditioned=False, upsampled=True),      # decoder w/ Concat (paper Table 3)
    "pix2pixhd": Layout(_pix2pixhd, conditioned=False, upsampled=False),
}


def check_generator_config(g) -> None:
    """Cross-field checks of a GeneratorConfig that the tables answer (config.validate calls it)."""
    if g.arch not in GENERATORS:
        raise ConfigError(f"unknown generator.arch {g.arch!r}; use one of {', '.join(GENERATORS)}")
    if g.cond_norm not in COND_NORMS:
        raise ConfigError(f"unknown generator.cond_norm {g.cond_norm!r}; use one of {', '.join(COND_NORMS)}")
    layout = GENERATORS[g.arch]
    if g.use_vae and not layout.conditioned:
        raise ConfigError(f"generator.use_vae needs generator.arch=spade (arch {g.arch} takes no z)")
    if g.cond_norm != "spade" and not layout.conditioned:
        raise ConfigError(f"generator.cond_norm={g.cond_norm} needs generator.arch=spade "
                          f"(arch {g.arch} has no conditioning layers)")


def build_generator(cfg: RunConfig) -> nn.Module:
    """The generator for `cfg` (a RunConfig), initialised as the original (xavier, 0.02).

    `G(segmap, z=None) -> [B, 3, H, W]` in [-1, 1]; with use_vae and z None, z ~ N(0, I).
    """
    check_generator_config(cfg.generator)
    return init_weights(GENERATORS[cfg.generator.arch].build(cfg))


__all__ = ["build_generator", "check_generator_config", "COND_NORMS", "GENERATORS", "Layout",
           "UPSAMPLING_LAYERS", "SPADEGenerator", "ConcatGenerator", "Pix2PixHDGenerator",
           "ResnetDecoderGenerator"]
