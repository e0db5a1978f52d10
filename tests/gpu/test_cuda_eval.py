"""The evaluation path on CUDA gives the CPU's numbers: generation, FID Inception features
(both protocols) and the segmenter, on the same weights and inputs, fp32 with TF32 off.

Tolerances: relative L2 1e-4 for generated images, features and logits (fp32 rounding in
other kernels lands near 1e-6); generated uint8 pixels within one level; at least 99.9% of
the segmenter's predicted labels identical (a pixel whose top two logits tie to within
rounding may flip). The metrics as `spade-bench eval` computes them, TF32 included, are
compared in test_cuda_pipeline.py.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from cuda_helpers import relative_error, tiny_config
from eval.fid import FID_PROTOCOLS, FeatureExtractor
from eval.images import to_uint8
from eval.segmenter import DefaultSegmenter
from runners.bench import random_batch, segmentation_network
from spade_bench.generators import build_generator

pytestmark = pytest.mark.gpu


def _smooth_images(count: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """uint8 [count, 3, size, size]: upsampled noise, so images have structure (never zeros)."""
    coarse = torch.rand(count, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return (F.interpolate(coarse, size=size, mode="bilinear", align_corners=False) * 255).round().to(torch.uint8)


def test_generation_on_cuda_matches_cpu(cuda, fp32_exact):
    cfg = tiny_config()
    torch.manual_seed(0)
    generator = build_generator(cfg).eval()
    segmap, _ = random_batch(cfg, 4, torch.device("cpu"), torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = generator(segmap)
        on_gpu = copy.deepcopy(generator).to(cuda)(segmap.to(cuda)).cpu()
    assert relative_error(on_gpu, reference) < 1e-4
    assert (to_uint8(on_gpu).int() - to_uint8(reference).int()).abs().max() <= 1


@pytest.mark.parametrize("protocol", FID_PROTOCOLS)
def test_fid_features_on_cuda_match_cpu(cuda, fp32_exact, fid_inception, protocol):
    images = _smooth_images(4)
    reference = torch.from_numpy(FeatureExtractor(protocol, "cpu", batch_size=4)(images))
    on_gpu = torch.from_numpy(FeatureExtractor(protocol, cuda, batch_size=4)(images))
    assert on_gpu.shape == (4, 2048) and torch.isfinite(on_gpu).all()
    assert relative_error(on_gpu, reference) < 1e-4


def test_segmenter_on_cuda_matches_cpu(cuda, fp32_exact):
    classes = 11
    torch.manual_seed(0)
    # The ImageNet encoder when its wheel is installed, else a random one: the check is the device.
    network, _ = segmentation_network(classes, torch.device("cpu"))
    segmenter = DefaultSegmenter(network, (64, 64), "smp-unet", "0" * 64, classes).eval()
    images = _smooth_images(4, size=48).float() / 127.5 - 1  # another size: the resize path runs too
    with torch.no_grad():
        reference = segmenter.logits(images)
        on_gpu = copy.deepcopy(segmenter).to(cuda).logits(images.to(cuda)).cpu()
    assert on_gpu.shape == (4, classes, 48, 48)
    assert relative_error(on_gpu, reference) < 1e-4
    agree = (on_gpu.argmax(1) == reference.argmax(1)).float().mean()
    assert agree >= 0.999
