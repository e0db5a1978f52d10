"""The SPADE layer and the normalisation factories it builds on.

SPADE (REFERENCE section 1) normalises activations without a learned affine transform,
then modulates them per pixel with gamma and beta predicted from the segmentation map:

    out = param_free_norm(x) * (1 + gamma(m)) + beta(m)      # modulation="one_plus_gamma"
    out = param_free_norm(x) * gamma(m) + beta(m)            # modulation="gamma" (paper's Eq. 1)

The segmap is resized to each feature resolution with nearest interpolation. A generator
resizes it once per resolution per forward pass: it passes a fresh `dict` as `cache` down
to its blocks, keyed by (H, W).
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spade_bench.errors import ConfigError

NormFactory = Callable[[int], nn.Module]
SegmapCache = dict[tuple[int, int], Tensor]

NORM_KINDS = ("syncbatch", "batch", "instance")
MODULATIONS = ("one_plus_gamma", "gamma")


def norm_factory(kind: str, *, affine: bool) -> NormFactory:
    """Return `make(channels) -> nn.Module` for a 2-d normalisation layer.

    Args:
        kind: syncbatch (nn.SyncBatchNorm; outside a process group it runs as plain batch
            norm, so it works in a single CPU process), batch or instance.
        affine: learn a per-channel scale and shift. SPADE's own norm never does.
    """
    if kind == "syncbatch":
        return partial(nn.SyncBatchNorm, affine=affine)
    if kind == "batch":
        return partial(nn.BatchNorm2d, affine=affine)
    if kind == "instance":
        return partial(nn.InstanceNorm2d, affine=affine)
    raise ConfigError(f"unknown normalisation {kind!r}; use one of {', '.join(NORM_KINDS)}")


def param_free_norm(kind: str) -> NormFactory:
    """The parameter-free normalisation inside SPADE: `norm_factory(kind, affine=False)`."""
    return norm_factory(kind, affine=False)


def resize_segmap(segmap: Tensor, size: tuple[int, int], cache: Optional[SegmapCache] = None) -> Tensor:
    """`segmap` resized to `size` (H, W) with nearest interpolation, memoised in `cache`.

    The cache belongs to one forward pass of one segmap; the caller makes a new dict each
    time, so a stale entry can never be reused for a different segmap.
    """
    size = (int(size[0]), int(size[1]))
    if tuple(segmap.shape[-2:]) == size:
        return segmap
    if cache is not None and size in cache:
        return cache[size]
    resized = F.interpolate(segmap, size=size, mode="nearest")
    if cache is not None:
        cache[size] = resized
    return resized


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
