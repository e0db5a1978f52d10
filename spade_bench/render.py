"""The one seeded rendering path: label maps -> images with a trained generator, as the
evaluation harness, the label-dependence check and `spade-bench synth` all need it.

Each image has its own seed, so an image never depends on the batch it was rendered in:
- with the VAE (generator.use_vae), z comes from that seed: from the posterior of a style
  photo through `spade_bench.encoders.reparameterize` (z = mu + eps * exp(logvar / 2), as the
  original test code does) when an encoder and style photos are given, else from the prior
  N(0, I). The noise is drawn on the CPU, so the same seed gives the same z on every device;
- without the VAE the generator draws no noise in eval mode; torch's RNG is seeded with the
  first image's seed for any sampling it might do, and restored afterwards.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from spade_bench.encoders import reparameterize


def prior_z(seed: int, z_dim: int) -> Tensor:
    """z ~ N(0, I) of one image, float32 [z_dim] on the CPU, from its seed."""
    return torch.randn(z_dim, generator=torch.Generator().manual_seed(int(seed)))


def posterior_z(mu: Tensor, logvar: Tensor, seed: int) -> Tensor:
    """z of one image from its encoder output (mu, logvar: [z_dim]), eps from its seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return reparameterize(mu.detach().float().cpu(), logvar.detach().float().cpu())


@torch.no_grad()
def render(generator: nn.Module, segmap: Tensor, seeds: Sequence[int], *, use_vae: bool, z_dim: int = 256,
           encoder: Optional[nn.Module] = None, style: Optional[Tensor] = None) -> Tensor:
    """Images [B, 3, H, W] in [-1, 1] for semantic inputs `segmap` [B, C, H, W], one seed per image.

    Args:
        generator: in eval mode, on segmap's device.
        segmap: `spade_bench.data.semantic_input(...)`.
        seeds: one per image (`eval.protocol.per_image_seed`, or the same seed for a fixed z).
        use_vae: the generator takes z.
        z_dim: length of z.
        encoder: the style encoder; with `style`, z comes from its posterior.
        style: photos [B, 3, H, W] in [-1, 1] whose style to use.
    """
    if len(seeds) != segmap.shape[0]:
        raise ValueError(f"{segmap.shape[0]} label maps but {len(seeds)} seeds")
    device = segmap.device
    if use_vae:
        if encoder is not None and style is not None:
            mu, logvar = encoder(style.to(device))
            z = torch.stack([posterior_z(mu[i], logvar[i], s) for i, s in enumerate(seeds)])
        else:
            z = torch.stack([prior_z(s, z_dim) for s in seeds])
        return generator(segmap, z.to(device))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(int(seeds[0]))
        return generator(segmap)
