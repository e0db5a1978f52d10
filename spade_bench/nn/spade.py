"""The SPADE layer, and `make_spade`, its conditioning-layer factory.

SPADE (REFERENCE section 1) normalises activations without a learned affine transform,
then modulates them per pixel with gamma and beta predicted from the segmentation map:

    out = param_free_norm(x) * (1 + gamma(m)) + beta(m)      # modulation="one_plus_gamma"
    out = param_free_norm(x) * gamma(m) + beta(m)            # modulation="gamma" (paper's Eq. 1)

The segmap is resized to each feature resolution with nearest interpolation. A generator
resizes it once per resolution per forward pass: it passes a fresh `dict` as `cache` down
to its blocks, keyed by (H, W). `make_spade` is SPADE's conditioning-layer factory (the
contract is in nn/norms.py).
"""
from __future__ import annotations

from functools import partial
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spade_bench.errors import ConfigError
from spade_bench.names import MODULATIONS  # noqa: F401 - re-exported
from spade_bench.nn.norms import (CondNormFactory, NormFactory, SegmapCache,  # noqa: F401 - re-exported
                                  norm_factory, param_free_norm, resize_segmap)


class SPADE(nn.Module):
    """Normalise x without learned affine, then modulate it per pixel from the segmap.

    Args:
        channels: channels of the activation x being normalised.
        label_channels: channels of the segmap (one-hot classes + don't-care + edges).
        norm: factory for the parameter-free normalisation, e.g. `param_free_norm("batch")`.
        hidden: width of the shared MLP (128 in the original).
        kernel_size: kernel of the three MLP convolutions (3 in the original).
        modulation: one_plus_gamma (original code) or gamma (paper's equation).
        fused: compute gamma and beta with one convolution whose weight is the
            concatenation of mlp_gamma's and mlp_beta's at forward time. Same parameters,
            same state dict, same result; one kernel launch instead of two.
    """

    def __init__(self, channels: int, label_channels: int, *, norm: NormFactory, hidden: int = 128,
                 kernel_size: int = 3, modulation: str = "one_plus_gamma", fused: bool = False):
        super().__init__()
        if modulation not in MODULATIONS:
            raise ConfigError(f"unknown SPADE modulation {modulation!r}; use one of {', '.join(MODULATIONS)}")
        if kernel_size % 2 != 1:
            raise ConfigError(f"generator.spade_kernel must be odd to keep the size, got {kernel_size}")
        self.modulation = modulation
        self.fused = fused
        self.padding = kernel_size // 2
        self.param_free_norm = norm(channels)
        # No spectral norm on these three convolutions, as in the original.
        self.mlp_shared = nn.Sequential(
            nn.Conv2d(label_channels, hidden, kernel_size, padding=self.padding), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, kernel_size, padding=self.padding)
        self.mlp_beta = nn.Conv2d(hidden, channels, kernel_size, padding=self.padding)

    def gamma_beta(self, segmap: Tensor) -> tuple[Tensor, Tensor]:
        """Per-pixel (gamma, beta) from a segmap already at the activation's size."""
        actv = self.mlp_shared(segmap)
        if self.fused:
            weight = torch.cat([self.mlp_gamma.weight, self.mlp_beta.weight], dim=0)
            bias = torch.cat([self.mlp_gamma.bias, self.mlp_beta.bias], dim=0)
            gamma, beta = F.conv2d(actv, weight, bias, padding=self.padding).chunk(2, dim=1)
            return gamma, beta
        return self.mlp_gamma(actv), self.mlp_beta(actv)

    def forward(self, x: Tensor, segmap: Tensor, cache: Optional[SegmapCache] = None) -> Tensor:
        normalized = self.param_free_norm(x)
        gamma, beta = self.gamma_beta(resize_segmap(segmap, x.shape[-2:], cache))
        if self.modulation == "one_plus_gamma":
            return normalized * (1 + gamma) + beta
        return normalized * gamma + beta


def make_spade(label_channels: int, *, norm: NormFactory, hidden: int = 128, kernel_size: int = 3,
               modulation: str = "one_plus_gamma", fused: bool = False) -> CondNormFactory:
    """`make(channels) -> SPADE(channels, label_channels, ...)`: SPADE as a conditioning layer."""
    return partial(SPADE, label_channels=label_channels, norm=norm, hidden=hidden, kernel_size=kernel_size,
                   modulation=modulation, fused=fused)
