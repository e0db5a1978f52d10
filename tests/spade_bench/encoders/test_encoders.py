"""VAE style encoder: layout, parameter count, small crops, reparameterisation."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from spade_bench.config import resolve
from spade_bench.encoders import ConvEncoder, build_encoder, reparameterize
from spade_bench.nn import count_parameters


def test_original_encoder_layout_and_count():
    encoder = ConvEncoder(ndf=64, z_dim=256, num_layers=6)
    convs = [m for m in encoder.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 512, 512]
    assert all(c.kernel_size == (3, 3) and c.stride == (2, 2) and c.bias is None for c in convs)
    assert all(parametrize.is_parametrized(c, "weight") for c in convs)
    assert sum(isinstance(m, nn.InstanceNorm2d) for m in encoder.modules()) == 6
    conv_weights = 9 * (3 * 64 + 64 * 128 + 128 * 256 + 256 * 512 + 512 * 512 + 512 * 512)
    linears = 2 * (512 * 4 * 4 * 256 + 256)
    assert count_parameters(encoder) == conv_weights + linears


@pytest.mark.parametrize("crop,layers,input_size", [(64, 5, 128), (256, 6, 256)])
def test_build_encoder_fits_the_crop(crop, layers, input_size):
    cfg = resolve("spade-vae", overrides=[f"data.crop_size={crop}", f"data.load_size={crop}", "encoder.ndf=4"])
    encoder = build_encoder(cfg)
    assert encoder.num_layers == layers and encoder.input_size == input_size
    mu, logvar = encoder(torch.rand(2, 3, crop, crop) * 2 - 1)
    assert mu.shape == logvar.shape == (2, cfg.generator.z_dim)


def test_no_encoder_without_vae():
    assert build_encoder(resolve("spade", preset="smoke")) is None


def test_reparameterize():
    torch.manual_seed(0)
    mu = torch.full((20000, 2), 3.0)
    logvar = torch.log(torch.tensor([[0.25, 4.0]])).expand(20000, 2)
    z = reparameterize(mu, logvar)
    assert torch.allclose(z.mean(0), torch.tensor([3.0, 3.0]), atol=0.05)
    assert torch.allclose(z.std(0), torch.tensor([0.5, 2.0]), atol=0.05)
    assert torch.equal(reparameterize(mu[:3], torch.full((3, 2), -200.0)), mu[:3])


def test_reparameterize_is_the_trainers_and_the_harness_formula():
    """One reparameterisation: with noise=None it draws as the trainer did, and with given
    noise (per-image seeds in evaluation) it is mu + noise * exp(logvar / 2) exactly."""
    mu, logvar = torch.randn(4, 8), torch.randn(4, 8)
    torch.manual_seed(1)
    trainer_z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
    torch.manual_seed(1)
    assert torch.equal(reparameterize(mu, logvar), trainer_z)
    noise = torch.randn(4, 8)
    assert torch.equal(reparameterize(mu, logvar, noise), mu + noise * torch.exp(0.5 * logvar))
