"""pix2pixHD's global generator with the segmap as its only input (the paper's baseline).

ReflectionPad + conv7x7 (ngf) -> `downsamples` stride-2 conv3x3 (doubling width) ->
`blocks` residual blocks -> `downsamples` stride-2 transposed conv3x3 (halving width) ->
ReflectionPad + conv7x7 (3) -> tanh. Every conv but the last is followed by the norm
(instance: no affine; batch: affine) and ReLU, with optional spectral norm, as SPADE's
repo builds it with norm_G=spectralinstance. Unlike that repo (issue #58), a plain
"instance" norm works.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from spade_bench.errors import ConfigError
from spade_bench.nn.blocks import ResnetBlock, conv_norm


class Pix2PixHDGenerator(nn.Module):
    """Encoder, residual blocks, decoder; the segmap enters once, at the input.

    Args:
        label_channels: segmap channels.
        ngf: width of the first conv (64 in the original).
        downsamples: stride-2 downsamplings, and as many upsamplings (4).
        blocks: residual blocks at the bottleneck (9).
        norm: instance or batch.
        spectral_norm: spectral norm on every conv but the output conv.
        image_size: (H, W); when given, checked to be divisible by 2^downsamples.
        kernel_size / initial_kernel_size: residual-block and first/last conv kernels (3, 7).
    """

    def __init__(self, label_channels: int, *, ngf: int = 64, downsamples: int = 4, blocks: int = 9,
                 norm: str = "instance", spectral_norm: bool = True,
                 image_size: Optional[tuple[int, int]] = None, kernel_size: int = 3,
                 initial_kernel_size: int = 7):
        super().__init__()
        if image_size is not None and (image_size[0] % 2 ** downsamples or image_size[1] % 2 ** downsamples):
            raise ConfigError(
                f"image size {image_size[0]}x{image_size[1]} (HxW) is not divisible by "
                f"2^{downsamples} (generator.pix2pixhd_downsamples); use sides that are multiples of "
                f"{2 ** downsamples} or fewer downsamplings")
        conv = dict(norm=norm, spectral_norm=spectral_norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(initial_kernel_size // 2),
            conv_norm(nn.Conv2d(label_channels, ngf, initial_kernel_size), **conv),
            nn.ReLU(),
        ]
        mult = 1
        for _ in range(downsamples):
            layers += [conv_norm(nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1), **conv),
                       nn.ReLU()]
            mult *= 2
        for _ in range(blocks):
            layers.append(ResnetBlock(ngf * mult, kernel_size=kernel_size, **conv))
        for _ in range(downsamples):
            layers += [conv_norm(nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1,
                                                    output_padding=1), **conv),
                       nn.ReLU()]
            mult //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf * mult, 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, segmap: Tensor, z: Optional[Tensor] = None) -> Tensor:
        if z is not None:
            raise ValueError("the pix2pixHD generator takes no z; pass z=None")
        return self.model(segmap)
