"""The fast path's levers give the eager fp32 result: channels_last, torch.compile, fused
Adam, and the Trainer switching them on (on CUDA) or off (on a CPU).

bf16 autocast numerics against fp32 on the same weights: tests/runners/test_bench.py
(`compare_numerics`, CPU and CUDA).

Tolerances, all relative L2 errors (||a - b|| / ||b||) in fp32 with TF32 off:
- channels_last vs contiguous: 1e-4 for outputs and gradients. Only the convolution
  algorithms (and their summation order) differ; fp32 rounding over ~20 layers lands near 1e-6.
- torch.compile vs eager: 1e-4 outputs, 1e-3 gradients. Inductor fuses the norm and
  pointwise ops into Triton kernels with other reduction orders; backward reductions over
  the batch and pixels are longer, hence the looser gradient bound.
- fused Adam vs foreach Adam: rtol 1e-5 (the same update, other kernels: ulp-level).
"""
from __future__ import annotations

import copy

import pytest
import torch

from cuda_helpers import TARGETS, relative_error, tiny_config
from runners.bench import MODE_OVERRIDES, random_batch
from spade_bench.config import apply_overrides
from spade_bench.discriminators import build_discriminator, discriminate
from spade_bench.engine import GANEngine
from spade_bench.generators import build_generator


def _forward_backward(generator, discriminator, segmap, image, memory_format=torch.contiguous_format):
    """One G forward, D on fake and real, backward of a scalar touching every output."""
    segmap = segmap.contiguous(memory_format=memory_format)
    image = image.contiguous(memory_format=memory_format)
    fake = generator(segmap)
    pred_fake, pred_real = discriminate(discriminator, segmap, fake, image)
    predictions = [scale[-1] for scale in pred_fake + pred_real]
    loss = fake.square().mean() + sum(p.mean() for p in predictions)
    loss.backward()
    return {
        "fake": fake.detach(),
        "predictions": torch.cat([p.detach().flatten() for p in predictions]),
        "generator_grads": torch.cat([p.grad.flatten() for p in generator.parameters() if p.grad is not None]),
        "discriminator_grads": torch.cat([p.grad.flatten() for p in discriminator.parameters()
                                          if p.grad is not None]),
    }


def _networks(device: torch.device):
    cfg = tiny_config()
    torch.manual_seed(0)
    generator = build_generator(cfg).to(device).train()
    discriminator = build_discriminator(cfg).to(device).train()
    segmap, image = random_batch(cfg, 2, device, torch.Generator().manual_seed(0))
    return generator, discriminator, segmap, image


@pytest.mark.parametrize("target", TARGETS)
def test_channels_last_matches_contiguous(target, fp32_exact):
    generator, discriminator, segmap, image = _networks(torch.device(target))
    last = torch.channels_last
    other = _forward_backward(copy.deepcopy(generator).to(memory_format=last),
                              copy.deepcopy(discriminator).to(memory_format=last), segmap, image, last)
    eager = _forward_backward(generator, discriminator, segmap, image)
    for key in eager:
        assert relative_error(other[key], eager[key]) < 1e-4, key
    # Not vacuous: the channels_last run kept that layout to the generator's output.
    assert other["fake"].is_contiguous(memory_format=last) and not eager["fake"].is_contiguous(memory_format=last)


@pytest.mark.gpu
def test_compile_matches_eager_on_cuda(cuda, fp32_exact):
    generator, discriminator, segmap, image = _networks(cuda)
    compiled_g, compiled_d = copy.deepcopy(generator), copy.deepcopy(discriminator)
    compiled = _forward_backward(torch.compile(compiled_g), torch.compile(compiled_d), segmap, image)
    eager = _forward_backward(generator, discriminator, segmap, image)
    assert relative_error(compiled["fake"], eager["fake"]) < 1e-4
    assert relative_error(compiled["predictions"], eager["predictions"]) < 1e-4
    assert relative_error(compiled["generator_grads"], eager["generator_grads"]) < 1e-3
    assert relative_error(compiled["discriminator_grads"], eager["discriminator_grads"]) < 1e-3


@pytest.mark.parametrize("target", TARGETS)
def test_fused_adam_matches_foreach_adam(target):
    device = torch.device(target)
    cfg = tiny_config()
    torch.manual_seed(0)
    start = [p.detach().to(device) for p in build_generator(cfg).parameters()]
    fused = [p.clone().requires_grad_() for p in start]
    foreach = [p.clone().requires_grad_() for p in start]
    kwargs = dict(lr=cfg.optim.lr_G, betas=cfg.optim.betas)
    optimisers = [torch.optim.Adam(fused, fused=True, **kwargs), torch.optim.Adam(foreach, foreach=True, **kwargs)]
    draw = torch.Generator().manual_seed(1)
    for _ in range(5):
        for a, b in zip(fused, foreach):
            grad = torch.randn(a.shape, generator=draw).to(device)
            a.grad, b.grad = grad.clone(), grad.clone()
        for optimiser in optimisers:
            optimiser.step()
    for a, b in zip(fused, foreach):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)
    moved = max(float((a.detach() - s).abs().max()) for a, s in zip(fused, start))
    assert moved > 2 * cfg.optim.lr_G  # five Adam steps of about lr each


@pytest.mark.parametrize("target", TARGETS)
def test_engine_fast_path_switches(target):
    """The fast mode's config on CUDA gives bf16 autocast, channels_last weights and fused
    Adam; on a CPU the same config leaves them off (CPU autocast is opt-in: train.amp_cpu)."""
    device = torch.device(target)
    cfg = apply_overrides(tiny_config(), {**MODE_OVERRIDES["fast"], "train.compile": False,
                                          "train.device": str(device)})
    engine = GANEngine(cfg, device=device)
    on_cuda = device.type == "cuda"
    assert engine.use_amp is on_cuda and engine.channels_last is on_cuda
    assert bool(engine.optim_G.defaults["fused"]) is on_cuda and bool(engine.optim_D.defaults["fused"]) is on_cuda
    weights = [p for p in engine.generator.parameters() if p.dim() == 4]
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in weights) is on_cuda
    segmap, image = random_batch(cfg, 2, device, torch.Generator().manual_seed(0))
    if engine.channels_last:
        segmap = segmap.contiguous(memory_format=torch.channels_last)
        image = image.contiguous(memory_format=torch.channels_last)
    before = [p.detach().clone() for p in engine.generator.parameters()]
    losses = {**engine.generator_step(segmap, image), **engine.discriminator_step(segmap, image)}
    assert all(torch.isfinite(v).all() for v in losses.values()), losses
    assert any(not torch.equal(b, p) for b, p in zip(before, engine.generator.parameters()))
