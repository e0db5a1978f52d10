"""The name tables: every vocabulary a network or loss config key draws from, in one place.

Each table maps a name to where its implementation lives, as "package.module:attr", and
imports nothing: config validation reads these tables without loading torch, and the
builders import an entry's implementation only when they build it (`load`). A table is the
one list of its names; nothing else spells them out.

| table               | config key                                              | implementation            |
|---------------------|---------------------------------------------------------|---------------------------|
| NORMS               | generator.param_free_norm, generator.pix2pixhd_norm     | `(channels, *, affine)`   |
| LAYER_NORMS         | discriminator.norm (a NORMS entry, or "none")           |                           |
| COND_NORMS          | generator.cond_norm                                     | `(cfg) -> make(channels)` |
| GENERATORS          | generator.arch                                          | `Layout(build, ...)`      |
| UPSAMPLING_LAYERS   | generator.num_upsampling_layers                         | number of x2 upsamplings  |
| MODULATIONS         | generator.modulation                                    | nn/spade.py `SPADE`       |
| GAN_MODES           | loss.gan_mode                                           | losses/gan.py `GANLoss`   |
| PERCEPTUAL_BACKBONES| loss.perceptual (a backbone, or "none")                 | a five-feature nn.Module  |

A new name is one entry here plus its implementation; tests/spade_bench/test_names.py loads
every entry and checks that config validation accepts exactly each table's names.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


def load(ref: str) -> Any:
    """The object a table entry names: "package.module:attr" -> that attribute, imported now."""
    module, sep, attr = ref.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"table entry {ref!r} must look like 'package.module:attr'")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Layout:
    """A generator layout.

    Args:
        build: "module:attr" of `build(cfg) -> nn.Module`, before weight initialisation.
        conditioned: its blocks take `generator.cond_norm`, and it can start from z (use_vae).
        upsampled: its input size is the image size / 2^n, n from `generator.num_upsampling_layers`.
    """

    build: str
    conditioned: bool
    upsampled: bool


# 2-d normalisations: SPADE's and CLADE's parameter-free norm, pix2pixHD's norm, and the
# norm after a discriminator or encoder conv. nn.SyncBatchNorm runs as plain batch norm
# outside a process group (one CPU process).
NORMS: dict[str, str] = {
    "syncbatch": "torch.nn:SyncBatchNorm",
    "batch": "torch.nn:BatchNorm2d",
    "instance": "torch.nn:InstanceNorm2d",
}
# conv_norm's choices: a NORMS entry, or no norm after the conv.
LAYER_NORMS: tuple[str, ...] = (*NORMS, "none")

# Conditioning layers of the "spade" layout's blocks: cfg -> make(channels) -> layer(x, segmap, cache).
COND_NORMS: dict[str, str] = {
    "spade": "spade_bench.generators:spade_layers",          # gamma, beta from a conv MLP (the original)
    "clade": "spade_bench.generators:clade_layers",          # gamma, beta looked up per class (Tan et al. 2020)
    "none": "spade_bench.generators:unconditioned_layers",   # the parameter-free norm alone
}

GENERATORS: dict[str, Layout] = {
    "spade": Layout("spade_bench.generators:decoder", conditioned=True, upsampled=True),      # SPADE's decoder
    "concat": Layout("spade_bench.generators:concat_decoder", conditioned=False, upsampled=True),  # paper Table 3
    "pix2pixhd": Layout("spade_bench.generators:pix2pixhd", conditioned=False, upsampled=False),
}

# x2 upsamplings of the decoder layouts: the input is the image size / 2^n.
UPSAMPLING_LAYERS: dict[str, int] = {"normal": 5, "more": 6, "most": 7}

# SPADE's modulation: x_norm * (1 + gamma) + beta (the original code) or x_norm * gamma + beta (the paper's Eq. 1).
MODULATIONS: tuple[str, ...] = ("one_plus_gamma", "gamma")

GAN_MODES: tuple[str, ...] = ("hinge", "ls", "original")

PERCEPTUAL_BACKBONES: dict[str, str] = {
    "vgg19": "spade_bench.losses.perceptual:VGG19Features",
    "effnet-lite0": "spade_bench.losses.perceptual:EfficientNetLite0Features",
}
# loss.perceptual's choices: a backbone, or no perceptual term.
PERCEPTUAL_CHOICES: tuple[str, ...] = (*PERCEPTUAL_BACKBONES, "none")
