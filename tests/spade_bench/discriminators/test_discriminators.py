"""Multiscale PatchGAN: exact parameter counts, layout, output structure, discriminate()."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from spade_bench.config import resolve
from spade_bench.discriminators import (MultiscaleDiscriminator, NLayerDiscriminator, build_discriminator,
                                        discriminate)
from spade_bench.nn import count_parameters


@pytest.mark.parametrize("dataset,expected", [("ade20k", 5_836_930), ("cityscapes", 5_601_410)])
def test_parameter_count_equals_the_original(dataset, expected):
    cfg = resolve("spade", dataset=dataset, root="/x")
    assert count_parameters(build_discriminator(cfg)) == expected


def test_patchgan_layout():
    d = NLayerDiscriminator(13, ndf=64, n_layers=4, norm="instance", spectral_norm=True)
    stages = list(d.children())
    assert len(stages) == 5
    first, last = stages[0][0], stages[-1][0]
    assert (first.in_channels, first.out_channels, first.stride, first.padding) == (13, 64, (2, 2), (2, 2))
    assert first.bias is not None and not parametrize.is_parametrized(first)
    assert isinstance(stages[0][1], nn.LeakyReLU) and stages[0][1].negative_slope == 0.2
    middle = [stage[0] for stage in stages[1:4]]
    assert [(s[0].out_channels, s[0].stride) for s in middle] == [(128, (2, 2)), (256, (2, 2)), (512, (1, 1))]
    for seq in middle:
        conv, norm = seq
        assert conv.kernel_size == (4, 4) and conv.bias is None and parametrize.is_parametrized(conv, "weight")
        assert isinstance(norm, nn.InstanceNorm2d) and not norm.affine
    assert (last.out_channels, last.stride) == (1, (1, 1)) and not parametrize.is_parametrized(last)


def test_output_structure_and_scales():
    torch.manual_seed(0)
    d = MultiscaleDiscriminator(7, num_D=2, ndf=8, n_layers=4).eval()
    x = torch.randn(2, 7, 64, 64)
    out = d(x)
    assert len(out) == 2 and all(len(scale) == 5 for scale in out)
    # k4 s2 p2: 64 -> 33 -> 17 -> 9, then s1: 10, 11.
    assert [t.shape[-1] for t in out[0]] == [33, 17, 9, 10, 11]
    assert out[0][-1].shape == (2, 1, 11, 11)
    pooled = F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)
    second = d.discriminator_1(pooled)
    assert all(torch.allclose(a, b) for a, b in zip(out[1], second))


def test_norm_and_spectral_options():
    batch = MultiscaleDiscriminator(7, num_D=1, ndf=8, n_layers=3, norm="batch", spectral_norm=False)
    assert any(isinstance(m, nn.BatchNorm2d) and m.affine for m in batch.modules())
    assert not any(parametrize.is_parametrized(m) for m in batch.modules())
    bare = MultiscaleDiscriminator(7, num_D=3, ndf=8, n_layers=3, norm="none")
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) for m in bare.modules())
    assert all(m.bias is not None for m in bare.modules() if isinstance(m, nn.Conv2d))
    assert len(bare(torch.randn(1, 7, 32, 32))) == 3


def test_discriminate_runs_one_batch_and_splits_fake_first():
    torch.manual_seed(0)
    cfg = resolve("spade", preset="smoke", overrides=["discriminator.ndf=8"])
    d = build_discriminator(cfg).eval()  # eval: spectral norm does not iterate between calls
    channels = cfg.data.semantic_channels
    segmap = F.one_hot(torch.randint(0, channels, (2, 64, 64)), channels).permute(0, 3, 1, 2).float()
    fake, real = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    calls = []
    d.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    pred_fake, pred_real = discriminate(d, segmap, fake, real)
    assert calls == [4]
    # Instance norm is per sample, so the joint batch equals separate passes.
    alone_fake, alone_real = d(torch.cat([segmap, fake], 1)), d(torch.cat([segmap, real], 1))
    for joint, alone in ((pred_fake, alone_fake), (pred_real, alone_real)):
        assert len(joint) == cfg.discriminator.num_D
        for a, b in zip(joint, alone):
            assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(a, b))
