"""CLADE: class-adaptive normalisation (Tan et al., arXiv 2004.02867; authors' code tzt101/CLADE).

Like SPADE, CLADE normalises x without a learned affine transform and then modulates it
per pixel; but gamma and beta are looked up per class from a learned table instead of
being computed from the segmap by a conv MLP:

    out = param_free_norm(x) * gamma[class(m)] + beta[class(m)]

class(m) is the argmax over the segmap's class channels (one-hot classes, then the
don't-care channel), nearest-resized to x. As in the authors' `ClassAffine`, there is no
"1 +": gamma starts uniform in [0, 1) and beta at 0 (the generator's xavier init does not
touch these tables). With instance edges (the segmap's last channel), a 1x1 conv of the
edge map is appended as one more channel, so the next conv sees channels + 1.
Parameter names follow the authors' `SPADELight` (class_specified_affine.weight/bias,
inst_conv).
"""
from __future__ import annotations

from functools import partial
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spade_bench.nn.norms import CondNormFactory, NormFactory, SegmapCache, resize_segmap


class ClassAffine(nn.Module):
    """Per-class gamma (`weight`) and beta (`bias`) tables, [num_classes, channels]."""

    def __init__(self, num_classes: int, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, channels))
        self.bias = nn.Parameter(torch.empty(num_classes, channels))
        nn.init.uniform_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, normalized: Tensor, classes: Tensor) -> Tensor:
        gamma = F.embedding(classes, self.weight).permute(0, 3, 1, 2)
        beta = F.embedding(classes, self.bias).permute(0, 3, 1, 2)
        return normalized * gamma.to(normalized.dtype) + beta.to(normalized.dtype)


class CLADE(nn.Module):
    """Normalise x without learned affine, then scale and shift it by per-class tables.

    Args:
        channels: channels of the activation x.
        num_classes: the segmap's class channels (label_nc + the don't-care channel); the
            argmax over these picks each pixel's row of the tables.
        norm: factory for the parameter-free normalisation, e.g. `param_free_norm("batch")`.
        instance_edges: the segmap's last channel is an instance-edge map; append a 1x1 conv
            of it to the output (one more channel).
    """

    def __init__(self, channels: int, num_classes: int, *, norm: NormFactory, instance_edges: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.instance_edges = instance_edges
        self.param_free_norm = norm(channels)
        self.class_specified_affine = ClassAffine(num_classes, channels)
        if instance_edges:
            self.inst_conv = nn.Conv2d(1, 1, kernel_size=1)

    def forward(self, x: Tensor, segmap: Tensor, cache: Optional[SegmapCache] = None) -> Tensor:
        normalized = self.param_free_norm(x)
        out = self.class_specified_affine(normalized, class_map(segmap, self.num_classes, x.shape[-2:], cache))
        if self.instance_edges:
            edges = resize_segmap(segmap, x.shape[-2:], cache)[:, -1:]
            out = torch.cat([out, self.inst_conv(edges.to(out.dtype))], dim=1)
        return out


def class_map(segmap: Tensor, num_classes: int, size: tuple[int, int],
              cache: Optional[SegmapCache] = None) -> Tensor:
    """Each pixel's class (argmax over the first `num_classes` channels) of `segmap` resized
    to `size`, [N, H, W], memoised in `cache` next to the resized segmaps.

    Every CLADE layer at one resolution reads the same map, so the generator's per-forward
    cache computes it once per resolution. Its key, ("classes", num_classes, H, W), cannot
    meet resize_segmap's (H, W).
    """
    key = ("classes", num_classes, int(size[0]), int(size[1]))
    if cache is not None and key in cache:
        return cache[key]  # type: ignore[index]
    classes = resize_segmap(segmap, size, cache)[:, :num_classes].argmax(dim=1)
    if cache is not None:
        cache[key] = classes  # type: ignore[index]
    return classes


def make_clade(num_classes: int, *, norm: NormFactory, instance_edges: bool = False) -> CondNormFactory:
    """`make(channels) -> CLADE(channels, num_classes, ...)`: CLADE as a conditioning layer."""
    factory = partial(CLADE, num_classes=num_classes, norm=norm, instance_edges=instance_edges)
    factory.extra_channels = int(instance_edges)  # the appended edge channel (nn/norms.py contract)
    return factory
