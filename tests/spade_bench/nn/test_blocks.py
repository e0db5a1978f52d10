"""Residual blocks: SPADE block wiring, spectral norm placement, Concat block, pix2pixHD block."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from spade_bench.errors import ConfigError
from spade_bench.nn import count_parameters
from spade_bench.nn.blocks import ConcatResnetBlock, ResnetBlock, SPADEResnetBlock, conv_norm
from spade_bench.nn.spade import SPADE, norm_factory, param_free_norm


def segmap(batch=2, classes=5, size=16):
    return F.one_hot(torch.randint(0, classes, (batch, size, size)), classes).permute(0, 3, 1, 2).float()


def test_spade_block_wiring_matches_the_original():
    torch.manual_seed(0)
    block = SPADEResnetBlock(8, 4, 5, norm=param_free_norm("batch"), hidden=16)
    assert block.learned_shortcut
    assert (block.conv_0.in_channels, block.conv_0.out_channels) == (8, 4)  # fmiddle = min(fin, fout)
    assert (block.conv_1.in_channels, block.conv_1.out_channels) == (4, 4)
    assert block.conv_s.kernel_size == (1, 1) and block.conv_s.bias is None
    block.eval()  # spectral norm's power iteration would change the weights between calls
    x, seg = torch.randn(2, 8, 8, 8), segmap()
    shortcut = block.conv_s(block.norm_s(x, seg))  # no activation on the shortcut
    dx = block.conv_0(F.leaky_relu(block.norm_0(x, seg), 0.2))
    dx = block.conv_1(F.leaky_relu(block.norm_1(dx, seg), 0.2))
    assert torch.allclose(block(x, seg), shortcut + dx, atol=1e-6)


def test_identity_shortcut_when_widths_match():
    block = SPADEResnetBlock(6, 6, 5, norm=param_free_norm("batch"), hidden=8)
    assert not block.learned_shortcut and not hasattr(block, "conv_s") and not hasattr(block, "norm_s")


def test_spectral_norm_on_block_convs_but_not_on_spade_mlps():
    block = SPADEResnetBlock(8, 4, 5, norm=param_free_norm("batch"), hidden=16, spectral_norm=True)
    for conv in (block.conv_0, block.conv_1, block.conv_s):
        assert parametrize.is_parametrized(conv, "weight")
    for spade in (block.norm_0, block.norm_1, block.norm_s):
        for conv in (spade.mlp_shared[0], spade.mlp_gamma, spade.mlp_beta):
            assert not parametrize.is_parametrized(conv, "weight")
    plain = SPADEResnetBlock(8, 4, 5, norm=param_free_norm("batch"), hidden=16, spectral_norm=False)
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())
    # Spectral norm adds buffers (u, v), not parameters.
    assert count_parameters(block) == count_parameters(plain)


def test_spade_block_passes_its_options_to_every_spade_layer():
    block = SPADEResnetBlock(8, 4, 5, norm=param_free_norm("instance"), hidden=16, kernel_size=1,
                             modulation="gamma", fused_modulation=True)
    spades = [m for m in block.modules() if isinstance(m, SPADE)]
    assert len(spades) == 3
    for spade in spades:
        assert spade.modulation == "gamma" and spade.fused
        assert isinstance(spade.param_free_norm, nn.InstanceNorm2d)
        assert spade.mlp_gamma.kernel_size == (1, 1) and spade.mlp_shared[0].out_channels == 16


def test_concat_block_reads_segmap_through_affine_norms():
    torch.manual_seed(0)
    block = ConcatResnetBlock(8, 4, 5, norm=norm_factory("batch", affine=True))
    assert block.conv_0.in_channels == 8 + 5 and block.conv_s.in_channels == 8 + 5
    assert block.norm_0.affine and block.norm_1.affine and block.norm_0.num_features == 13
    assert not any(isinstance(m, SPADE) for m in block.modules())
    x = torch.randn(2, 8, 8, 8)
    seg_a, seg_b = segmap(), segmap()
    out_a, out_b = block(x, seg_a), block(x, seg_b)
    assert out_a.shape == (2, 4, 8, 8)
    assert not torch.allclose(out_a, out_b)


def test_pix2pixhd_resnet_block_is_residual_with_reflection_padding():
    block = ResnetBlock(6, norm="instance", spectral_norm=True)
    pads = [m for m in block.conv_block if isinstance(m, nn.ReflectionPad2d)]
    assert len(pads) == 2
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.bias is None and parametrize.is_parametrized(c, "weight") for c in convs)
    block.eval()
    x = torch.randn(2, 6, 8, 8)
    assert torch.allclose(block(x), x + block.conv_block(x))


def test_conv_norm_drops_bias_only_when_a_norm_follows():
    with_norm = conv_norm(nn.Conv2d(3, 4, 3), norm="instance", spectral_norm=False)
    assert isinstance(with_norm, nn.Sequential) and with_norm[0].bias is None
    assert isinstance(with_norm[1], nn.InstanceNorm2d) and not with_norm[1].affine
    batch = conv_norm(nn.Conv2d(3, 4, 3), norm="batch", spectral_norm=True)
    assert batch[1].affine and parametrize.is_parametrized(batch[0], "weight")
    bare = conv_norm(nn.Conv2d(3, 4, 3), norm="none", spectral_norm=True)
    assert isinstance(bare, nn.Conv2d) and bare.bias is not None
    transposed = conv_norm(nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1),
                           norm="instance", spectral_norm=True)
    assert transposed(torch.randn(1, 4, 5, 5)).shape == (1, 2, 10, 10)
    with pytest.raises(ConfigError, match="unknown norm"):
        conv_norm(nn.Conv2d(3, 4, 3), norm="layer", spectral_norm=False)
