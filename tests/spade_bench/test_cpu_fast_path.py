"""The CPU path's levers: which are bit-identical to the plain eager path (Adam's multi-tensor
update, the procedural scene cache) and which only agree to rounding (NHWC activations with the
perceptual backbone's 1x1 convolutions through oneDNN)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spade_bench.config import resolve
from spade_bench.data import build_dataset
from spade_bench.data.order import TrainBatches
from spade_bench.distributed import DistInfo, unwrap
from spade_bench.engine import GANEngine
from spade_bench.nn.pointwise import FrozenPointwiseConv, use_onednn_pointwise

TINY = ["generator.ngf=8", "generator.spade_hidden=16", "discriminator.ndf=8", "discriminator.n_layers=2",
        "train.batch_size=2", "data.synthetic_train_size=6", "data.synthetic_val_size=2",
        "data.crop_size=32", "data.load_size=36"]


def _train(*overrides: str, steps: int = 2) -> tuple[GANEngine, list[dict]]:
    cfg = resolve("spade", preset="smoke", overrides=TINY + list(overrides))
    engine = GANEngine(cfg)
    batches = iter(TrainBatches(build_dataset(cfg.data, "train"), cfg.train.batch_size, cfg.train.seed, DistInfo()))
    losses = []
    for _ in range(steps):
        segmap, image = engine.prepare(next(batches))
        step = engine.generator_step(segmap, image)
        step.update(engine.discriminator_step(segmap, image))
        engine.step_schedules()
        losses.append({k: float(v) for k, v in step.items()})
    return engine, losses


def _weights(engine: GANEngine) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v for n, net in (("G", engine.generator), ("D", engine.discriminator))
            for k, v in unwrap(net).state_dict().items()}


def test_foreach_adam_and_the_scene_cache_are_bit_identical_to_the_plain_path():
    plain, plain_losses = _train("optim.foreach=false", "data.cache_scenes=false", "train.channels_last_cpu=false",
                                 steps=4)   # 4 steps of 2 over 6 scenes: the second epoch reads the cache
    fast, fast_losses = _train("optim.foreach=true", "data.cache_scenes=true", "train.channels_last_cpu=false",
                               steps=4)
    assert plain.optim_G.defaults["foreach"] is False and fast.optim_G.defaults["foreach"] is True
    assert plain_losses == fast_losses
    a, b = _weights(plain), _weights(fast)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_scene_cache_returns_the_scenes_it_would_draw():
    cfg = resolve("spade", preset="smoke", overrides=TINY)
    cached, drawn = build_dataset(cfg.data, "train"), build_dataset(cfg.data, "val")
    assert cached._scenes == {} and drawn._scenes == {}
    from dataclasses import replace
    uncached = build_dataset(replace(cfg.data, cache_scenes=False), "train")
    assert uncached._scenes is None
    for epoch in range(2):
        for index in range(len(cached)):
            torch.manual_seed(epoch * 100 + index)
            a = cached[index]
            torch.manual_seed(epoch * 100 + index)
            b = uncached[index]
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert len(cached._scenes) == len(cached)


def test_frozen_pointwise_convolution_agrees_with_conv2d_forward_and_backward():
    torch.manual_seed(0)
    conv = nn.Conv2d(24, 40, 1, bias=False).requires_grad_(False)
    fast = FrozenPointwiseConv(conv)
    x = torch.randn(4, 24, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    y = x.detach().clone().requires_grad_(True)
    out_fast, out_ref = fast(x), F.conv2d(y, conv.weight)
    torch.testing.assert_close(out_fast, out_ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out_ref)
    out_fast.backward(grad)
    out_ref.backward(grad)
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-5, atol=1e-5)
    assert fast.weight is conv.weight   # same parameter, same state-dict key
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1, stride=2)).requires_grad_(False)
    assert use_onednn_pointwise(net) == 1 and isinstance(net[1], FrozenPointwiseConv)
    trainable = nn.Conv2d(8, 8, 1)
    with pytest.raises(ValueError, match="frozen"):
        FrozenPointwiseConv(trainable)


def test_the_cpu_fast_path_agrees_with_nchw_to_rounding_not_to_the_bit():
    """NHWC activations (weights keep their layout) and oneDNN 1x1 convolutions in the perceptual
    backbone: the first step's losses agree to float32 rounding, the weights do not bit for bit."""
    nchw, nchw_losses = _train("train.channels_last_cpu=false", steps=1)
    nhwc, nhwc_losses = _train("train.channels_last_cpu=true", steps=1)
    assert nhwc.channels_last and not nchw.channels_last
    assert next(unwrap(nhwc.generator).parameters()).is_contiguous()   # checkpoints keep their layout
    backbone = nhwc.generator_losses["perceptual"][0].backbone
    assert any(isinstance(m, FrozenPointwiseConv) for m in backbone.modules())
    for key, value in nchw_losses[0].items():
        assert nhwc_losses[0][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    a, b = _weights(nchw), _weights(nhwc)
    assert not all(torch.equal(a[k], b[k]) for k in a)
    # Adam's first step moves a weight by about lr (4e-4 for D): a gradient within rounding of
    # zero may flip its sign, nothing moves further. (Spectral norm's u and v, buffers, may move
    # more: their power iteration amplifies any change when two singular values are close.)
    params = {f"{n}.{k}" for n, net in (("G", nchw.generator), ("D", nchw.discriminator))
              for k, _ in unwrap(net).named_parameters()}
    assert max(float((a[k] - b[k]).abs().max()) for k in params) <= 2 * 4e-4 + 1e-6
