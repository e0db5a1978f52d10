"""Generators: exact parameter counts, layout, upsampling modes, VAE input, pix2pixHD,
modulation ablation equivalence, fused modulation, wash-away at network level."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from spade_bench.config import resolve
from spade_bench.errors import ConfigError
from spade_bench.generators import (ConcatGenerator, Pix2PixHDGenerator, SPADEGenerator,
                                    build_generator)
from spade_bench.nn import count_parameters
from spade_bench.nn.spade import SPADE

TINY = ["generator.ngf=8", "generator.spade_hidden=16", "discriminator.ndf=8", "encoder.ndf=8",
        "loss.perceptual=none"]
# 32x32 where a test only compares two networks (smoke batch norm works at the 1x1 start).
TINY32 = TINY + ["data.crop_size=32", "data.load_size=32"]


def one_hot(labels: torch.Tensor, channels: int) -> torch.Tensor:
    return F.one_hot(labels, channels).permute(0, 3, 1, 2).float()


def random_segmap(cfg, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, cfg.data.semantic_channels, (batch, *cfg.data.image_size), generator=g)
    return one_hot(labels, cfg.data.semantic_channels)


@pytest.mark.parametrize("dataset,label_channels,expected", [
    ("ade20k", 151, 96_492_483),
    ("cityscapes", 36, 93_048_003),
])
def test_parameter_count_equals_the_original(dataset, label_channels, expected):
    cfg = resolve("spade", dataset=dataset, root="/x")
    assert cfg.data.semantic_channels == label_channels
    generator = build_generator(cfg)
    assert count_parameters(generator) == expected
    # The original's block layout at ngf 64.
    widths = {name: (block.conv_0.in_channels, block.conv_1.out_channels)
              for name, block in generator.named_children() if name not in ("fc", "conv_img")}
    assert widths == {"head_0": (1024, 1024), "G_middle_0": (1024, 1024), "G_middle_1": (1024, 1024),
                      "up_0": (1024, 512), "up_1": (512, 256), "up_2": (256, 128), "up_3": (128, 64)}
    assert generator.fc.in_channels == label_channels and generator.fc.out_channels == 1024
    if dataset == "cityscapes":
        assert (generator.sh, generator.sw) == (4, 8)  # 512x256 with "more": 2^6


@pytest.mark.parametrize("mode,size", [("normal", (32, 64)), ("more", (64, 64)), ("most", (128, 128))])
def test_upsampling_modes_reach_the_image_size(mode, size):
    torch.manual_seed(0)
    generator = SPADEGenerator(3, image_size=size, ngf=4, num_upsampling_layers=mode, norm="batch",
                               spade_hidden=8)
    assert hasattr(generator, "up_4") == (mode == "most")
    n = {"normal": 5, "more": 6, "most": 7}[mode]
    assert (generator.sh, generator.sw) == (size[0] // 2 ** n, size[1] // 2 ** n)
    out = generator(one_hot(torch.randint(0, 3, (2, *size)), 3))
    assert out.shape == (2, 3, *size)
    assert out.abs().max() <= 1


def test_sizes_not_divisible_are_config_errors():
    with pytest.raises(ConfigError, match="not divisible by 2\\^5"):
        SPADEGenerator(3, image_size=(48, 64), ngf=4)
    with pytest.raises(ConfigError, match="pix2pixhd_downsamples"):
        Pix2PixHDGenerator(3, ngf=4, image_size=(40, 64))


def test_segmap_is_resized_once_per_resolution(monkeypatch):
    cfg = resolve("spade", preset="smoke", overrides=TINY)
    generator = build_generator(cfg)
    calls = []
    original = F.interpolate

    def counting(input, size=None, scale_factor=None, mode="nearest", **kwargs):
        if size is not None:
            calls.append(tuple(size))
        return original(input, size=size, scale_factor=scale_factor, mode=mode, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "interpolate", counting)
    generator(random_segmap(cfg))
    # 64x64 output, normal: the segmap is needed at 2, 4, 8, 16, 32 (and 64 as it is).
    assert sorted(calls) == [(2, 2), (4, 4), (8, 8), (16, 16), (32, 32)]


def test_vae_generator_takes_z():
    cfg = resolve("spade-vae", preset="smoke", overrides=TINY32)
    generator = build_generator(cfg).eval()
    assert isinstance(generator.fc, nn.Linear)
    assert generator.fc.in_features == 256 and generator.fc.out_features == 16 * 8 * 1 * 1
    segmap = random_segmap(cfg)
    z = torch.randn(2, 256)
    assert torch.equal(generator(segmap, z), generator(segmap, z))
    assert not torch.allclose(generator(segmap), generator(segmap))  # z ~ N(0, I) per call
    assert not torch.allclose(generator(segmap, z), generator(segmap, torch.randn(2, 256)))


def test_a_segmap_generator_refuses_z():
    cfg = resolve("spade", preset="smoke", overrides=TINY32)
    with pytest.raises(ValueError, match="z=None"):
        build_generator(cfg)(random_segmap(cfg), torch.randn(2, 256))


def test_spade_and_spade_gamma_differ_only_in_modulation():
    """spade(theta) == spade-gamma(theta with every mlp_gamma bias + 1): (1 + gamma) is gamma
    with a shifted bias, so the two variants differ exactly where gamma enters."""
    torch.manual_seed(0)
    spade = build_generator(resolve("spade", preset="smoke", overrides=TINY32))
    gamma = build_generator(resolve("spade-gamma", preset="smoke", overrides=TINY32))
    state = spade.state_dict()
    gamma.load_state_dict(state, strict=True)
    segmap = random_segmap(resolve("spade", preset="smoke", overrides=TINY32))
    spade.eval(), gamma.eval()
    out_spade, out_gamma = spade(segmap), gamma(segmap)
    assert (out_spade - out_gamma).abs().mean() > 1e-3
    shifted = {k: v + 1 if k.endswith("mlp_gamma.bias") else v for k, v in state.items()}
    gamma.load_state_dict(shifted, strict=True)
    assert torch.allclose(gamma(segmap), out_spade, atol=1e-5)


def test_fused_modulation_generator_matches_unfused():
    torch.manual_seed(0)
    cfg = resolve("spade", preset="smoke", overrides=TINY32)
    unfused = build_generator(cfg)
    fused = build_generator(resolve("spade", preset="smoke", overrides=TINY32 + ["generator.fused_modulation=true"]))
    assert all(m.fused for m in fused.modules() if isinstance(m, SPADE))
    fused.load_state_dict(unfused.state_dict(), strict=True)
    segmap = random_segmap(cfg)
    out_unfused, out_fused = unfused(segmap), fused(segmap)  # train mode: batch statistics
    assert torch.allclose(out_unfused, out_fused, atol=1e-5)
    out_unfused.sum().backward()
    out_fused.sum().backward()
    grads_unfused = torch.cat([p.grad.flatten() for p in unfused.parameters()])
    grads_fused = torch.cat([p.grad.flatten() for p in fused.parameters()])
    assert torch.allclose(grads_unfused, grads_fused, atol=1e-6, rtol=1e-3)


def test_pix2pixhd_layout_and_instance_norm():
    """The global generator: pad+conv7x7, 4 stride-2 downs, 9 blocks, 4 transposed ups,
    pad+conv7x7, tanh; instance norm (the original repo crashes here, SPADE issue #58).
    The original's 4 downsamplings (the 64x64 presets use 2: test_config's bottleneck test)."""
    cfg = resolve("pix2pixhd", preset="smoke", overrides=TINY + ["generator.pix2pixhd_downsamples=4"])
    generator = build_generator(cfg)
    assert isinstance(generator, Pix2PixHDGenerator)
    layers = list(generator.model)
    assert isinstance(layers[0], nn.ReflectionPad2d) and layers[1][0].kernel_size == (7, 7)
    downs = [m for m in generator.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    ups = [m for m in generator.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(downs) == 4 and len(ups) == 4
    assert [d.out_channels for d in downs] == [16, 32, 64, 128]
    assert sum(type(m).__name__ == "ResnetBlock" for m in layers) == 9
    assert isinstance(layers[-1], nn.Tanh) and layers[-2].kernel_size == (7, 7)
    norms = [m for m in generator.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert len(norms) == 1 + 4 + 2 * 9 + 4 and not any(n.affine for n in norms)
    assert parametrize.is_parametrized(downs[0], "weight")
    assert not parametrize.is_parametrized(layers[-2], "weight")
    out = generator(random_segmap(cfg))
    assert out.shape == (2, 3, 64, 64) and out.abs().max() <= 1


def test_pix2pixhd_without_spectral_norm_and_with_batch_norm():
    plain = Pix2PixHDGenerator(4, ngf=4, downsamples=2, blocks=2, norm="batch", spectral_norm=False)
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())
    assert any(isinstance(m, nn.BatchNorm2d) and m.affine for m in plain.modules())
    assert plain(one_hot(torch.randint(0, 4, (2, 16, 16)), 4)).shape == (2, 3, 16, 16)


def test_uniform_label_maps_wash_away_in_pix2pixhd_but_not_in_spade():
    """Paper Fig. 3 at network level: pix2pixHD's input stage (pad, conv7x7, instance norm,
    ReLU) maps an all-class-A and an all-class-B map to the same (zero) tensor, so nothing
    after it can tell the classes apart; SPADE's output still depends on the class.
    (Downstream of that stage, float rounding of the zero tensor is amplified by further
    instance norms, so the comparison is made where the information is lost.)"""
    torch.manual_seed(0)
    classes, size = 5, (64, 64)
    map_a = one_hot(torch.full((1, *size), 1), classes)
    map_b = one_hot(torch.full((1, *size), 3), classes)
    pix2pixhd = Pix2PixHDGenerator(classes, ngf=8, downsamples=2, blocks=2, norm="instance").eval()
    spade = SPADEGenerator(classes, image_size=size, ngf=8, norm="instance", spade_hidden=16).eval()
    for net in (pix2pixhd, spade):
        for m in net.modules():  # weights large enough for differences to show
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                w = m.parametrizations.weight.original if parametrize.is_parametrized(m, "weight") else m.weight
                nn.init.normal_(w, 0, 0.5)
    input_stage = pix2pixhd.model[:3]
    assert isinstance(input_stage[1][1], nn.InstanceNorm2d)
    stage_a, stage_b = input_stage(map_a), input_stage(map_b)
    assert stage_a.abs().max() < 1e-4 and stage_b.abs().max() < 1e-4
    mixed = one_hot(torch.randint(0, classes, (1, *size)), classes)
    assert input_stage(mixed).abs().mean() > 0.1  # the same stage keeps a non-uniform map
    spade_a, spade_b = spade(map_a), spade(map_b)
    assert (spade_a - spade_b).abs().mean() > 0.05


def test_concat_generator_has_no_spade_and_uses_affine_norms():
    cfg = resolve("concat", preset="smoke", overrides=TINY)
    generator = build_generator(cfg)
    assert isinstance(generator, ConcatGenerator)
    assert not any(isinstance(m, SPADE) for m in generator.modules())
    norms = [m for m in generator.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(n.affine for n in norms)
    assert generator.head_0.conv_0.in_channels == 16 * 8 + cfg.data.semantic_channels
