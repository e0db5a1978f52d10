"""Multiscale PatchGAN discriminator (REFERENCE section 3), built from a RunConfig.

The input is cat(segmap, image). Each scale returns its intermediate outputs followed by
its prediction, so D(x) is `list[list[Tensor]]`: per scale, features then prediction.
`discriminate` runs fake and real through D as one batch, as the original does.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spade_bench.nn.blocks import conv_norm
from spade_bench.nn.init import init_weights

DiscriminatorOutput = list[list[Tensor]]


class NLayerDiscriminator(nn.Module):
    """PatchGAN: conv(s2)+LReLU, (n_layers - 1) x [norm conv + LReLU], conv -> 1 logit map.

    Kernel 4, padding 2. Width doubles up to 512; the last normed conv has stride 1. The
    first and the output conv have neither norm nor spectral norm.

    Args:
        input_channels: segmap channels + 3.
        ndf: width of the first conv (64).
        n_layers: number of convs before the output conv (4).
        norm: instance, batch, syncbatch or none for the middle convs.
        spectral_norm: spectral norm on the middle convs.
    """

    def __init__(self, input_channels: int, *, ndf: int = 64, n_layers: int = 4, norm: str = "instance",
                 spectral_norm: bool = True):
        super().__init__()
        kernel = 4
        pad = int(math.ceil((kernel - 1.0) / 2))
        width = ndf
        sequence: list[list[nn.Module]] = [[nn.Conv2d(input_channels, width, kernel, stride=2, padding=pad),
                                            nn.LeakyReLU(0.2)]]
        for n in range(1, n_layers):
            previous, width = width, min(width * 2, 512)
            stride = 1 if n == n_layers - 1 else 2
            sequence.append([conv_norm(nn.Conv2d(previous, width, kernel, stride=stride, padding=pad),
                                       norm=norm, spectral_norm=spectral_norm),
                             nn.LeakyReLU(0.2)])
        sequence.append([nn.Conv2d(width, 1, kernel, stride=1, padding=pad)])
        # Named model0..modelN as in the original, so state-dict keys read the same.
        for n, layers in enumerate(sequence):
            self.add_module(f"model{n}", nn.Sequential(*layers))

    def forward(self, x: Tensor) -> list[Tensor]:
        outputs = []
        for stage in self.children():
            x = stage(x)
            outputs.append(x)
        return outputs


class MultiscaleDiscriminator(nn.Module):
    """`num_D` PatchGANs on the input and its successively 2x average-pooled copies.

    Args:
        input_channels: segmap channels + 3.
        num_D: number of scales (2).
        ndf, n_layers, norm, spectral_norm: passed to each NLayerDiscriminator.
    """

    def __init__(self, input_channels: int, *, num_D: int = 2, ndf: int = 64, n_layers: int = 4,
                 norm: str = "instance", spectral_norm: bool = True):
        super().__init__()
        for i in range(num_D):
            self.add_module(f"discriminator_{i}", NLayerDiscriminator(
                input_channels, ndf=ndf, n_layers=n_layers, norm=norm, spectral_norm=spectral_norm))

    @staticmethod
    def downsample(x: Tensor) -> Tensor:
        return F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: Tensor) -> DiscriminatorOutput:
        results = []
        for i, discriminator in enumerate(self.children()):
            if i:
                x = self.downsample(x)
            results.append(discriminator(x))
        return results


def build_discriminator(cfg) -> nn.Module:
    """The multiscale discriminator for `cfg` (a RunConfig), initialised as the original."""
    d = cfg.discriminator
    net = MultiscaleDiscriminator(cfg.data.semantic_channels + 3, num_D=d.num_D, ndf=d.ndf,
                                  n_layers=d.n_layers, norm=d.norm, spectral_norm=d.spectral_norm)
    return init_weights(net)


def discriminate(discriminator: nn.Module, segmap: Tensor, fake: Tensor, real: Tensor
                 ) -> tuple[DiscriminatorOutput, DiscriminatorOutput]:
    """Run cat(segmap, fake) and cat(segmap, real) through D as one batch; split the outputs.

    Returns (pred_fake, pred_real), each `list[list[Tensor]]` like D's output.
    """
    segmap = segmap.to(fake.dtype)
    fake_and_real = torch.cat([torch.cat([segmap, fake], dim=1),
                               torch.cat([segmap, real.to(fake.dtype)], dim=1)], dim=0)
    outputs = discriminator(fake_and_real)
    half = fake.shape[0]
    pred_fake = [[t[:half] for t in scale] for scale in outputs]
    pred_real = [[t[half:] for t in scale] for scale in outputs]
    return pred_fake, pred_real


__all__ = ["NLayerDiscriminator", "MultiscaleDiscriminator", "build_discriminator", "discriminate"]
