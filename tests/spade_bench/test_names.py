"""The name tables (spade_bench/names.py): every entry's implementation loads and works, and
config validation accepts exactly each table's names, whatever they are."""
from __future__ import annotations

import dataclasses
import re

import pytest
import torch
from torch import nn

from spade_bench import config, names
from spade_bench.config import RunConfig, apply_overrides, resolve, validate
from spade_bench.errors import ConfigError
from spade_bench.losses import GANLoss, PerceptualLoss
from spade_bench.nn.blocks import conv_norm
from spade_bench.nn.norms import extra_channels, param_free_norm
from spade_bench.nn.spade import SPADE

TINY = ["generator.ngf=8", "generator.spade_hidden=16", "data.crop_size=32", "data.load_size=32",
        "loss.perceptual=none"]


def test_every_norm_loads_and_normalises():
    x = torch.randn(2, 4, 8, 8)
    for name, ref in names.NORMS.items():
        cls = names.load(ref)
        assert isinstance(cls, type) and issubclass(cls, nn.Module), name
        norm = param_free_norm(name)(4)
        assert isinstance(norm, cls) and not any(True for _ in norm.parameters())
        assert norm(x).shape == x.shape
    for name in names.LAYER_NORMS:
        conv_norm(nn.Conv2d(4, 4, 3, padding=1), norm=name, spectral_norm=False)


@pytest.mark.parametrize("arch", list(names.GENERATORS))
def test_every_layout_builds(arch):
    layout = names.GENERATORS[arch]
    cfg = apply_overrides(resolve("spade", preset="smoke", overrides=TINY), [f"generator.arch={arch}"])
    generator = names.load(layout.build)(cfg)
    assert isinstance(generator, nn.Module)
    assert generator(torch.zeros(2, cfg.data.semantic_channels, 32, 32)).shape == (2, 3, 32, 32)


@pytest.mark.parametrize("cond_norm", list(names.COND_NORMS))
def test_every_conditioning_layer_loads(cond_norm):
    cfg = apply_overrides(resolve("spade", preset="smoke", overrides=TINY), [f"generator.cond_norm={cond_norm}"])
    make_layer = names.load(names.COND_NORMS[cond_norm])(cfg)
    out = make_layer(8)(torch.randn(2, 8, 4, 4), torch.zeros(2, cfg.data.semantic_channels, 32, 32), {})
    assert out.shape == (2, 8 + extra_channels(make_layer), 4, 4)


def test_every_upsampling_count_builds_its_size():
    for name, n in names.UPSAMPLING_LAYERS.items():
        cfg = resolve("spade", preset="smoke", overrides=TINY + [f"generator.num_upsampling_layers={name}",
                                                                 f"data.crop_size={2 ** n}", f"data.load_size={2 ** n}"])
        generator = names.load(names.GENERATORS["spade"].build)(cfg)
        assert (generator.sh, generator.sw) == (1, 1), name


def test_every_modulation_gan_mode_and_backbone_is_taken():
    segmap, x = torch.zeros(1, 3, 4, 4), torch.randn(1, 2, 4, 4)
    for modulation in names.MODULATIONS:
        SPADE(2, 3, norm=param_free_norm("instance"), hidden=4, modulation=modulation)(x, segmap)
    for mode in names.GAN_MODES:
        assert torch.isfinite(GANLoss(mode)(torch.randn(2, 1, 4, 4), True, for_discriminator=True))
    for name, ref in names.PERCEPTUAL_BACKBONES.items():
        backbone = names.load(ref)
        assert issubclass(backbone, nn.Module) and backbone.name == name
    assert PerceptualLoss("effnet-lite0").name == "effnet-lite0"


# Names no table holds: validation must refuse each, and accept every table name.
NOT_A_NAME = "not-a-name"


@pytest.mark.parametrize("key", list(config.name_fields()))
def test_validation_accepts_exactly_the_tables_names(key):
    table = config.name_fields()[key].names()
    assert table, f"{key}: empty table"
    base = apply_overrides(RunConfig(), ["data.root=/data"])
    for value in table:
        cfg = apply_overrides(base, [f"{key}={value}"])   # strict loading takes the name
        section, field_name = key.split(".")
        assert getattr(getattr(cfg, section), field_name) == value
        try:
            validate(cfg)
        except ConfigError as e:   # only a cross-field rule may object, never the name itself
            assert "is not one of" not in str(e), (key, value, e)
    expected = f"{key}: '{NOT_A_NAME}' is not one of " + ", ".join(repr(v) for v in table)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        apply_overrides(base, [f"{key}={NOT_A_NAME}"])
    # A name set without strict loading (a variant's replace()) is checked by validate.
    bad = dataclasses.replace(base, **{section: dataclasses.replace(getattr(base, section),
                                                                    **{field_name: NOT_A_NAME})})
    with pytest.raises(ConfigError, match="is not one of"):
        validate(bad)


def test_a_new_table_entry_is_a_valid_config_value(monkeypatch):
    """Adding a name to a table is all validation needs: no list in config.py to extend."""
    monkeypatch.setitem(names.NORMS, "instance-copy", "torch.nn:InstanceNorm2d")
    cfg = apply_overrides(RunConfig(), ["generator.param_free_norm=instance-copy"])
    validate(cfg)
    assert isinstance(param_free_norm(cfg.generator.param_free_norm)(4), nn.InstanceNorm2d)
