"""SPADE's decoder-only generator layout, and its blocks (REFERENCE section 2).

Both start from a 16*ngf feature map at 1/2^n of the output size (n = 5, 6 or 7 for
num_upsampling_layers normal, more or most), made either from the nearest-downsampled
segmap (conv3x3) or, with the VAE, from z (Linear). Seven or eight residual blocks with
nearest x2 upsampling between them follow, then LeakyReLU(0.2), conv3x3 -> 3 and tanh:

    head_0 (16ngf) up G_middle_0 [up] G_middle_1 up up_0 (8ngf) up up_1 (4ngf) up up_2 (2ngf)
    up up_3 (ngf) [up up_4 (ngf/2)]

The layout is blind to its block (`make_block(fin, fout)`), and the usual block,
`CondResnetBlock`, is blind to its conditioning layer (`cond_norm`, see nn/norms.py):
`build_generator` passes SPADE, CLADE, ... layers by name. `SPADEGenerator` (SPADE layers
from SPADE's settings) and `ConcatGenerator` (the paper's "decoder w/ Concat") are the
same layout with a fixed block.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spade_bench.errors import ConfigError
from spade_bench.names import UPSAMPLING_LAYERS
from spade_bench.nn.blocks import ConcatResnetBlock, CondResnetBlock
from spade_bench.nn.norms import CondNormFactory, SegmapCache, norm_factory, param_free_norm, resize_segmap
from spade_bench.nn.spade import make_spade

BlockFactory = Callable[[int, int], nn.Module]


def conditioned_blocks(cond_norm: CondNormFactory, *, spectral_norm: bool = True) -> BlockFactory:
    """`make_block(fin, fout)` for `CondResnetBlock`s around the conditioning layer `cond_norm`."""
    return partial(CondResnetBlock, cond_norm=cond_norm, spectral_norm=spectral_norm)


class ResnetDecoderGenerator(nn.Module):
    """The SPADE generator's layout with a pluggable residual block.

    Args:
        label_channels: segmap channels.
        image_size: (H, W) of the output; both must be divisible by 2^n.
        make_block: `make_block(fin, fout)` builds one residual block taking (x, segmap, cache).
        ngf: base width (64 in the original).
        num_upsampling_layers: normal, more or most.
        use_vae: start from z (Linear(z_dim -> 16*ngf*sh*sw)) instead of the segmap.
        z_dim: latent size.
    """

    def __init__(self, label_channels: int, *, image_size: tuple[int, int], make_block: BlockFactory,
                 ngf: int = 64, num_upsampling_layers: str = "normal", use_vae: bool = False,
                 z_dim: int = 256):
        super().__init__()
        if num_upsampling_layers not in UPSAMPLING_LAYERS:
            raise ConfigError(f"generator.num_upsampling_layers={num_upsampling_layers!r}; "
                              f"use one of {', '.join(UPSAMPLING_LAYERS)}")
        n = UPSAMPLING_LAYERS[num_upsampling_layers]
        height, width = image_size
        if height % 2 ** n or width % 2 ** n:
            raise ConfigError(
                f"image size {height}x{width} (HxW) is not divisible by 2^{n} "
                f"(generator.num_upsampling_layers={num_upsampling_layers}); pick data.crop_size "
                f"and data.aspect_ratio so that both sides are multiples of {2 ** n}")
        self.num_upsampling_layers = num_upsampling_layers
        self.image_size = (height, width)
        self.sh, self.sw = height // 2 ** n, width // 2 ** n
        self.ngf = ngf
        self.use_vae = use_vae
        self.z_dim = z_dim
        if use_vae:
            self.fc = nn.Linear(z_dim, 16 * ngf * self.sh * self.sw)
        else:
            self.fc = nn.Conv2d(label_channels, 16 * ngf, 3, padding=1)
        self.head_0 = make_block(16 * ngf, 16 * ngf)
        self.G_middle_0 = make_block(16 * ngf, 16 * ngf)
        self.G_middle_1 = make_block(16 * ngf, 16 * ngf)
        self.up_0 = make_block(16 * ngf, 8 * ngf)
        self.up_1 = make_block(8 * ngf, 4 * ngf)
        self.up_2 = make_block(4 * ngf, 2 * ngf)
        self.up_3 = make_block(2 * ngf, 1 * ngf)
        final_channels = ngf
        if num_upsampling_layers == "most":
            self.up_4 = make_block(ngf, ngf // 2)
            final_channels = ngf // 2
        self.conv_img = nn.Conv2d(final_channels, 3, 3, padding=1)

    @staticmethod
    def up(x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest")

    def forward(self, segmap: Tensor, z: Optional[Tensor] = None) -> Tensor:
        # One resize per resolution per call, shared by every SPADE layer at that size.
        cache: SegmapCache = {}
        if self.use_vae:
            if z is None:
                dtype = segmap.dtype if segmap.is_floating_point() else torch.float32
                z = torch.randn(segmap.shape[0], self.z_dim, device=segmap.device, dtype=dtype)
            x = self.fc(z).view(-1, 16 * self.ngf, self.sh, self.sw)
        else:
            if z is not None:
                raise ValueError("this generator takes the segmap as input (generator.use_vae is off); "
                                 "pass z=None")
            x = self.fc(resize_segmap(segmap, (self.sh, self.sw), cache))
        x = self.head_0(x, segmap, cache)
        x = self.up(x)
        x = self.G_middle_0(x, segmap, cache)
        if self.num_upsampling_layers in ("more", "most"):
            x = self.up(x)
        x = self.G_middle_1(x, segmap, cache)
        x = self.up_0(self.up(x), segmap, cache)
        x = self.up_1(self.up(x), segmap, cache)
        x = self.up_2(self.up(x), segmap, cache)
        x = self.up_3(self.up(x), segmap, cache)
        if self.num_upsampling_layers == "most":
            x = self.up_4(self.up(x), segmap, cache)
        x = self.conv_img(F.leaky_relu(x, 0.2))
        return torch.tanh(x)


class SPADEGenerator(ResnetDecoderGenerator):
    """The SPADE generator: every residual block is modulated by SPADE layers.

    `build_generator` builds the same network (same state dict) as a `ResnetDecoderGenerator`
    from the config; this class takes SPADE's settings directly.

    Args:
        label_channels: segmap channels.
        image_size: (H, W) of the output.
        ngf: base width.
        num_upsampling_layers: normal, more or most.
        norm: SPADE's parameter-free norm: syncbatch, batch or instance.
        modulation: one_plus_gamma or gamma.
        spade_hidden, spade_kernel: SPADE's MLP width and kernel size.
        spectral_norm: spectral norm on the residual blocks' convolutions.
        use_vae, z_dim: start from z instead of the downsampled segmap.
        fused_modulation: one convolution for gamma and beta (same result).
    """

    def __init__(self, label_channels: int, *, image_size: tuple[int, int], ngf: int = 64,
                 num_upsampling_layers: str = "normal", norm: str = "syncbatch",
                 modulation: str = "one_plus_gamma", spade_hidden: int = 128, spade_kernel: int = 3,
                 spectral_norm: bool = True, use_vae: bool = False, z_dim: int = 256,
                 fused_modulation: bool = False):
        spade = make_spade(label_channels, norm=param_free_norm(norm), hidden=spade_hidden,
                           kernel_size=spade_kernel, modulation=modulation, fused=fused_modulation)
        make_block = conditioned_blocks(spade, spectral_norm=spectral_norm)
        super().__init__(label_channels, image_size=image_size, make_block=make_block, ngf=ngf,
                         num_upsampling_layers=num_upsampling_layers, use_vae=use_vae, z_dim=z_dim)


class ConcatGenerator(ResnetDecoderGenerator):
    """SPADE's decoder with the segmap concatenated to each block's input (no modulation).

    Args:
        label_channels: segmap channels.
        image_size: (H, W) of the output.
        ngf: base width.
        num_upsampling_layers: normal, more or most.
        norm: syncbatch, batch or instance, with learned affine parameters.
        spectral_norm: spectral norm on the residual blocks' convolutions.
    """

    def __init__(self, label_channels: int, *, image_size: tuple[int, int], ngf: int = 64,
                 num_upsampling_layers: str = "normal", norm: str = "syncbatch",
                 spectral_norm: bool = True):
        norm_layer = norm_factory(norm, affine=True)

        def make_block(fin: int, fout: int) -> nn.Module:
            return ConcatResnetBlock(fin, fout, label_channels, norm=norm_layer, spectral_norm=spectral_norm)

        super().__init__(label_channels, image_size=image_size, make_block=make_block, ngf=ngf,
                         num_upsampling_layers=num_upsampling_layers)
