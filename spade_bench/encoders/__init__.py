"""The VAE style encoder (REFERENCE section 3): photo -> (mu, logvar) of a 256-d z.

Built only when generator.use_vae. `reparameterize(mu, logvar)` draws
z = mu + eps * exp(0.5 * logvar), as the original's `encode_z`.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spade_bench.nn.blocks import conv_norm
from spade_bench.nn.init import init_weights


class ConvEncoder(nn.Module):
    """Conv3x3 stride-2 layers (spectral norm + instance norm, LReLU(0.2)) -> fc_mu, fc_var.

    Widths ndf, 2ndf, 4ndf, 8ndf, 8ndf[, 8ndf]. The input is resized (bilinear) to a fixed
    square so the last map is 4x4: 256x256 with six layers, as the original for crop >= 256.
    The original keeps 256x256 input but drops the sixth layer for smaller crops, which then
    fails to fit fc_mu; here smaller crops use five layers on a 128x128 input instead.

    Args:
        ndf: base width (the original uses ngf = 64).
        z_dim: latent size (256).
        num_layers: 6 (input 256x256) or 5 (input 128x128).
        norm: instance, batch, syncbatch or none.
        spectral_norm: spectral norm on the conv layers.
    """

    def __init__(self, *, ndf: int = 64, z_dim: int = 256, num_layers: int = 6, norm: str = "instance",
                 spectral_norm: bool = True):
        super().__init__()
        if num_layers not in (5, 6):
            raise ValueError(f"ConvEncoder has 5 or 6 layers, got {num_layers}")
        widths = [3, ndf, ndf * 2, ndf * 4, ndf * 8, ndf * 8, ndf * 8][: num_layers + 1]
        for i in range(num_layers):
            self.add_module(f"layer{i + 1}", conv_norm(
                nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1),
                norm=norm, spectral_norm=spectral_norm))
        self.num_layers = num_layers
        self.input_size = 4 * 2 ** num_layers
        self.fc_mu = nn.Linear(ndf * 8 * 4 * 4, z_dim)
        self.fc_var = nn.Linear(ndf * 8 * 4 * 4, z_dim)

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        x = image
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        for i in range(self.num_layers):
            if i:
                x = F.leaky_relu(x, 0.2)
            x = getattr(self, f"layer{i + 1}")(x)
        x = F.leaky_relu(x, 0.2).flatten(1)
        return self.fc_mu(x), self.fc_var(x)


def reparameterize(mu: Tensor, logvar: Tensor, noise: Optional[Tensor] = None) -> Tensor:
    """z = mu + eps * exp(0.5 * logvar): the one place this is written.

    Args:
        mu, logvar: the encoder's output.
        noise: eps, e.g. drawn from a per-image seed for reproducible evaluation; None draws
            eps ~ N(0, I) from the global generator (`randn_like(mu)`, as the trainer always has).
    """
    eps = torch.randn_like(mu) if noise is None else noise
    return mu + eps * torch.exp(0.5 * logvar)


def build_encoder(cfg) -> Optional[nn.Module]:
    """The style encoder for `cfg` (a RunConfig), or None without generator.use_vae."""
    if not cfg.generator.use_vae:
        return None
    num_layers = 6 if cfg.data.crop_size >= 256 else 5
    net = ConvEncoder(ndf=cfg.encoder.ndf, z_dim=cfg.generator.z_dim, num_layers=num_layers)
    return init_weights(net)


__all__ = ["ConvEncoder", "build_encoder", "reparameterize"]
