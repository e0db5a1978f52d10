"""init_weights (xavier_normal_ gain 0.02, zero biases, BN ~ N(1, 0.02)) and count_parameters."""
from __future__ import annotations

import math

import torch
from torch import nn

from spade_bench.nn import conv_norm, count_parameters, init_weights, spectral


def test_xavier_gain_002_on_convs_linears_and_spectral_originals():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(64, 128, 3),
        spectral(nn.Conv2d(128, 128, 3)),
        nn.ConvTranspose2d(128, 64, 3),
        nn.Linear(256, 512),
        nn.BatchNorm2d(512),
        nn.SyncBatchNorm(512),
        nn.InstanceNorm2d(8, affine=True),
    )
    init_weights(net)
    for layer, fan_in, fan_out in [(net[0], 64 * 9, 128 * 9), (net[2], 64 * 9, 128 * 9), (net[3], 256, 512)]:
        expected = 0.02 * math.sqrt(2.0 / (fan_in + fan_out))
        assert abs(layer.weight.std().item() / expected - 1) < 0.05
        assert torch.count_nonzero(layer.bias) == 0
    original = net[1].parametrizations.weight.original
    assert abs(original.std().item() / (0.02 * math.sqrt(2.0 / (128 * 9 * 2))) - 1) < 0.05
    for bn in (net[4], net[5]):
        assert abs(bn.weight.mean().item() - 1) < 0.005 and abs(bn.weight.std().item() - 0.02) < 0.003
        assert torch.count_nonzero(bn.bias) == 0
    # Instance norm is left at its defaults, as the original's name-based rule did.
    assert torch.equal(net[6].weight, torch.ones(8))


def test_count_parameters_counts_spectral_weights_once_and_skips_buffers():
    plain = nn.Conv2d(3, 4, 3)
    assert count_parameters(plain) == 3 * 4 * 9 + 4
    assert count_parameters(spectral(nn.Conv2d(3, 4, 3))) == 3 * 4 * 9 + 4
    normed = conv_norm(nn.Conv2d(3, 4, 3), norm="batch", spectral_norm=True)
    assert count_parameters(normed) == 3 * 4 * 9 + 2 * 4
    frozen = nn.Linear(5, 2).requires_grad_(False)
    assert count_parameters(frozen) == 12 and count_parameters(frozen, trainable_only=True) == 0
