"""The vocabularies live in one table each, and config validation reads those tables."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spade_bench import config
from spade_bench.config import apply_overrides, resolve
from spade_bench.errors import ConfigError
from spade_bench.generators import COND_NORMS, GENERATORS, UPSAMPLING_LAYERS, build_generator
from spade_bench.losses import GAN_MODES, PERCEPTUAL_BACKBONES
from spade_bench.nn.norms import NORMS
from spade_bench.nn.spade import MODULATIONS


def allowed(section: type, key: str) -> tuple:
    return config.choices(section, key)


def test_config_choices_are_the_tables_keys():
    assert allowed(config.GeneratorConfig, "arch") == tuple(GENERATORS)
    assert allowed(config.GeneratorConfig, "cond_norm") == tuple(COND_NORMS)
    assert allowed(config.GeneratorConfig, "param_free_norm") == tuple(NORMS)
    assert allowed(config.GeneratorConfig, "pix2pixhd_norm") == tuple(NORMS)
    assert allowed(config.DiscriminatorConfig, "norm") == (*NORMS, "none")
    assert allowed(config.GeneratorConfig, "num_upsampling_layers") == tuple(UPSAMPLING_LAYERS)
    assert allowed(config.GeneratorConfig, "modulation") == MODULATIONS
    assert allowed(config.LossConfig, "gan_mode") == GAN_MODES
    assert allowed(config.LossConfig, "perceptual") == (*PERCEPTUAL_BACKBONES, "none")


def test_unknown_names_list_the_table():
    with pytest.raises(ConfigError, match="generator.cond_norm: 'clad' is not one of 'spade', 'clade'"):
        apply_overrides(config.RunConfig(), ["generator.cond_norm=clad"])
    with pytest.raises(ConfigError, match="needs generator.arch=spade"):
        resolve("clade", preset="smoke", overrides=["generator.arch=pix2pixhd"])


@pytest.mark.parametrize("cond_norm", list(COND_NORMS))
def test_every_conditioning_layer_trains_in_the_decoder(cond_norm):
    cfg = resolve("spade", preset="smoke", overrides=[
        "generator.ngf=8", "generator.spade_hidden=16", "data.crop_size=32", "data.load_size=32",
        f"generator.cond_norm={cond_norm}"])
    torch.manual_seed(0)
    generator = build_generator(cfg)
    segmap = F.one_hot(torch.randint(0, 10, (2, 32, 32)), 10).permute(0, 3, 1, 2).float()
    out = generator(segmap)
    assert out.shape == (2, 3, 32, 32) and out.abs().max() <= 1
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in generator.parameters())
