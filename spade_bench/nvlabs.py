"""NVlabs SPADE checkpoints <-> spade-bench runs (`import-nvlabs`, `export-nvlabs`).

An NVlabs checkpoint folder (`checkpoints/NAME/` of the original code, or a released one)
holds `opt.txt` (the original's options, one `name: value` a line), `opt.pkl` (the same,
pickled) and `latest_net_G.pth`, `latest_net_D.pth` and, with the VAE, `latest_net_E.pth`
(plain state dicts).

Import reads opt.txt (never the pickle), maps the options to a `RunConfig`, renames the
spectral-norm keys (the original's `weight_orig` / `weight_u` / `weight_v`, from
`torch.nn.utils.spectral_norm`, become our parametrization's `parametrizations.weight.
original` / `.0._u` / `.0._v`), loads the weights strictly into the networks the GAN step
engine builds, and writes a standard run directory with a checkpoint in the training layout
(`checkpoint.training_state`). Its step is 0 (the original's iteration count is not in the
folder); with train.ema the EMA generator starts as the imported one. `RUN/provenance.json`
records where it came from: `"source": "nvlabs"`, the folder, and each file's sha256.

Networks are the original's tensor for tensor, and spectral norm runs its power iteration
in the original's order (`spade_bench.nn.spectral`), so an imported generator reproduces
the original's outputs in eval and training mode (tests/spade_bench/test_nvlabs.py checks
this against files the original code wrote).

Options spade-bench cannot express raise one `ConfigError` naming each of them, and so does an
option that shapes a network but is missing or empty (`NETWORK_OPTIONS`: the original writes
every option it parsed; the discriminator's only when latest_net_D.pth is there); the config is
then validated like any other (ranges, finiteness). netG and netD are looked up as the original
does (case and underscores ignored). A tensor holding NaN or infinity is named with its file, and
the run folder is written as a whole (`io.staged_folder`): a failed import writes nothing. Under TTUR
the original trains with Adam betas (0, 0.9) whatever its beta1/beta2 say
(pix2pix_model.create_optimizers), so import sets those.

Export leaves out a discriminator (or encoder) that the import initialised and nothing trained,
with a warning: the original's --continue_train would take it for trained weights. It refuses,
in one `ConfigError`, a run the original cannot build or whose weights it
cannot load (generator.arch=concat, generator.cond_norm other than spade, ...). Settings
that only training on with the original code would use (a perceptual loss other than
VGG, betas other than (0, 0.9) under TTUR) are written as the closest options, with a
warning; the original's test.py does not read them.
"""
from __future__ import annotations

import argparse
import math
import pickle
import re
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import torch

from spade_bench import checkpoint as ckpt
from spade_bench.config import RunConfig, apply_overrides, load_config_file, save_config, validate, with_dataset
from spade_bench.distributed import unwrap
from spade_bench.engine import GANEngine
from spade_bench.environment import environment_record
from spade_bench.errors import CheckpointError, ConfigError, WeightsError
from spade_bench.generators import UPSAMPLING_LAYERS
from spade_bench.io import atomic_write, atomic_write_text, sha256_file, staged_folder
from spade_bench.losses import GAN_MODES
from spade_bench.run_folder import RunFolder, read_provenance, write_json, write_provenance

NETWORK_FILES = {"generator": "latest_net_G.pth", "discriminator": "latest_net_D.pth", "encoder": "latest_net_E.pth"}

# The original's dataset_mode -> spade-bench's dataset name.
DATASET_MODES = {"custom": "folder", "coco": "coco-stuff", "ade20k": "ade20k", "cityscapes": "cityscapes",
                 "facades": "facades"}
_SPADE_NORM = re.compile(r"^(spectral)?spade(syncbatch|batch|instance)(\d+)x\d+$")
_LAYER_NORM = re.compile(r"^(spectral)?(instance|batch|syncbatch|sync_batch|none)?$")
_SN_SUFFIXES = {"weight_orig": "parametrizations.weight.original",
                "weight_u": "parametrizations.weight.0._u",
                "weight_v": "parametrizations.weight.0._v"}
# The Adam betas the original uses whenever TTUR is on, whatever --beta1/--beta2 say
# (pix2pix_model.create_optimizers).
TTUR_BETAS = (0.0, 0.9)


# ============================================================================= options

def read_options(path: str | Path) -> dict[str, str]:
    """opt.txt -> {option: value as written}. Header lines and `[default: ...]` notes are skipped."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} not found; pass an NVlabs checkpoint folder (it holds opt.txt and "
                              f"latest_net_G.pth)")
    options: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if ":" not in line or line.lstrip().startswith("-"):
            continue
        key, value = line.split(":", 1)
        options[key.strip()] = value.split("\t[default:", 1)[0].strip()
    if "label_nc" not in options or "netG" not in options:
        raise CheckpointError(f"{path} does not look like the original SPADE's opt.txt (no label_nc or netG)")
    return options


class _Options:
    """Typed access to opt.txt values; each missing or bad one is collected, not raised at once."""

    def __init__(self, raw: dict[str, str], required: frozenset[str] = frozenset()):
        self.raw = raw
        self.required = required
        self.problems: list[str] = []

    def text(self, key: str, default: Optional[str] = None) -> str:
        if key not in self.raw or self.raw[key] == "":
            if default is None or key in self.required:
                self.problems.append(f"{key} ({'missing' if key not in self.raw else 'empty'}: the original writes "
                                     f"every option, and this one shapes a network)")
                return ""
            return default
        return self.raw[key]

    def boolean(self, key: str, default: Optional[bool] = None) -> bool:
        value = self.text(key, None if default is None else str(default))
        if value not in ("True", "False"):
            if value:
                self.problems.append(f"{key}={value} (expected True or False)")
            return bool(default)
        return value == "True"

    def number(self, key: str, kind: type, default: Any = None) -> Any:
        value = self.text(key, None if default is None else str(default))
        try:
            number = kind(value)
        except ValueError:
            if value:
                self.problems.append(f"{key}={value} (expected a {kind.__name__})")
            return default if default is not None else kind(1)
        if kind is float and not math.isfinite(number):
            self.problems.append(f"{key}={value} (not a finite number)")
            return default if default is not None else 1.0
        return number

    def unsupported(self, key: str, value: Any, why: str) -> None:
        self.problems.append(f"{key}={value} ({why})")


# The options that shape each network (the original writes every option it parsed into opt.txt;
# a missing or empty one would silently become our default and build another network). The
# discriminator's are parsed only when the original trains, so a test-time opt.txt (a released
# checkpoint, which ships no latest_net_D.pth) lacks them: they are required only with that file.
NETWORK_OPTIONS = {
    "generator": ("label_nc", "contain_dontcare_label", "no_instance", "crop_size", "aspect_ratio", "ngf",
                  "netG", "norm_G", "use_vae"),
    "spade": ("num_upsampling_layers",),
    "pix2pixhd": ("resnet_n_downsample", "resnet_n_blocks", "resnet_kernel_size", "resnet_initial_kernel_size"),
    "vae": ("z_dim", "norm_E"),
    "discriminator": ("ndf", "netD", "num_D", "n_layers_D", "norm_D"),
}


def net_name(value: str) -> str:
    """netG / netD as the original looks them up (models/networks find_network_using_name):
    case and underscores ignored, so SPADE, Spade and pix2pix_hd all name a network."""
    return value.replace("_", "").lower()


def required_options(raw: dict[str, str], roles: tuple[str, ...] = ("generator", "discriminator")) -> frozenset[str]:
    """The options that must be in opt.txt to build `roles` (see NETWORK_OPTIONS)."""
    keys = set(NETWORK_OPTIONS["generator"])
    net_g = net_name(raw.get("netG", ""))
    if net_g in ("spade", "pix2pixhd"):
        keys |= set(NETWORK_OPTIONS[net_g])
    if raw.get("use_vae") == "True":
        keys |= set(NETWORK_OPTIONS["vae"])
    if "discriminator" in roles:
        keys |= set(NETWORK_OPTIONS["discriminator"])
    return frozenset(keys)


def config_from_options(raw: dict[str, str], *, dataset: Optional[str] = None, root: Optional[str] = None,
                        source: str = "opt.txt", roles: tuple[str, ...] = ("generator", "discriminator")) -> RunConfig:
    """The RunConfig that builds the networks the original built from these options.

    Raises one ConfigError that names every option spade-bench cannot express, and every option
    that shapes one of `roles`' networks but is missing or empty; the result is validated
    (ranges, finiteness) like any other config.
    """
    o = _Options(raw, required_options(raw, roles))
    mode = o.text("dataset_mode", "custom")
    if dataset is None:
        dataset = DATASET_MODES.get(mode)
        if dataset is None:
            o.unsupported("dataset_mode", mode, f"no spade-bench dataset for it; pass --dataset "
                                                f"({', '.join(sorted(set(DATASET_MODES.values())))})")
            dataset = "folder"
    cfg = with_dataset(RunConfig(), dataset, root)

    for key, expected in (("model", "pix2pix"), ("netD", "multiscale"), ("netD_subarch", "n_layer"),
                          ("output_nc", "3"), ("optimizer", "adam")):
        value = o.text(key, expected)
        if (net_name(value) if key == "netD" else value) != expected and value:
            o.unsupported(key, value, f"spade-bench has only {key}={expected}")

    label_nc = o.number("label_nc", int)
    contain_dontcare = o.boolean("contain_dontcare_label", False)
    preprocess = o.text("preprocess_mode", "resize_and_crop")
    if preprocess not in ("resize_and_crop", "fixed", "none"):
        o.unsupported("preprocess_mode", preprocess, "spade-bench has resize_and_crop, fixed and none")
        preprocess = "resize_and_crop"
    data = dict(label_nc=label_nc, contain_dontcare=contain_dontcare,
                use_instance=not o.boolean("no_instance", False), preprocess=preprocess,
                load_size=o.number("load_size", int), crop_size=o.number("crop_size", int),
                aspect_ratio=o.number("aspect_ratio", float, 1.0), flip=not o.boolean("no_flip", False))
    if dataset == "folder" and contain_dontcare:
        data["dont_care_value"] = 255  # the original's custom mode: 255 -> label_nc

    ngf = o.number("ngf", int)
    generator: dict[str, Any] = dict(ngf=ngf, use_vae=o.boolean("use_vae", False), z_dim=o.number("z_dim", int, 256),
                                     modulation="one_plus_gamma", spade_hidden=128)
    net_g = net_name(o.text("netG"))
    norm_g = o.text("norm_G", "spectralspadesyncbatch3x3")
    if net_g == "spade":
        m = _SPADE_NORM.match(norm_g)
        if not m:
            o.unsupported("norm_G", norm_g, "expected [spectral]spade{syncbatch,batch,instance}KxK")
        else:
            generator.update(arch="spade", spectral_norm=bool(m.group(1)), param_free_norm=m.group(2),
                             spade_kernel=int(m.group(3)))
        layers = o.text("num_upsampling_layers", "normal")
        if layers not in UPSAMPLING_LAYERS:
            o.unsupported("num_upsampling_layers", layers, f"expected {', '.join(UPSAMPLING_LAYERS)}")
        else:
            generator["num_upsampling_layers"] = layers
            n = UPSAMPLING_LAYERS[layers]
            crop, ratio = data["crop_size"], data["aspect_ratio"]
            if crop and ratio > 0 and int(round(crop / ratio)) // 2 ** n != int(round((crop // 2 ** n) / ratio)):
                o.unsupported("aspect_ratio", ratio, f"with crop_size {crop} the original's first feature "
                                                     f"map is not the one spade-bench computes")
    elif net_g == "pix2pixhd":
        m = _LAYER_NORM.match(norm_g)
        if not m or m.group(2) not in ("instance", "batch"):
            o.unsupported("norm_G", norm_g, "pix2pixhd takes [spectral]instance or [spectral]batch")
        else:
            generator.update(arch="pix2pixhd", spectral_norm=bool(m.group(1)), pix2pixhd_norm=m.group(2))
        generator.update(pix2pixhd_downsamples=o.number("resnet_n_downsample", int, 4),
                         pix2pixhd_blocks=o.number("resnet_n_blocks", int, 9))
        for key, expected in (("resnet_kernel_size", 3), ("resnet_initial_kernel_size", 7)):
            if o.number(key, int, expected) != expected:
                o.unsupported(key, o.raw[key], f"spade-bench's pix2pixhd uses {expected}")
        if generator["use_vae"]:
            o.unsupported("use_vae", True, "spade-bench's VAE needs netG=spade")
    elif net_g:
        o.unsupported("netG", o.raw["netG"], "spade-bench has spade and pix2pixhd")

    norm_d = o.text("norm_D", "spectralinstance")
    m = _LAYER_NORM.match(norm_d)
    if not m or m.group(2) in ("syncbatch", "sync_batch"):
        o.unsupported("norm_D", norm_d, "spade-bench's discriminator takes [spectral]{instance,batch,none}")
        discriminator: dict[str, Any] = {}
    else:
        discriminator = dict(norm=m.group(2) or "none", spectral_norm=bool(m.group(1)))
    discriminator.update(num_D=o.number("num_D", int, 2), n_layers=o.number("n_layers_D", int, 4),
                         ndf=o.number("ndf", int))

    if generator["use_vae"]:
        norm_e = o.text("norm_E", "spectralinstance")
        if norm_e != "spectralinstance":
            o.unsupported("norm_E", norm_e, "spade-bench's encoder is spectralinstance")

    gan_mode = o.text("gan_mode", "hinge")
    if gan_mode not in GAN_MODES:
        o.unsupported("gan_mode", gan_mode, f"spade-bench has {', '.join(GAN_MODES)}")
        gan_mode = "hinge"
    no_vgg = o.boolean("no_vgg_loss", False)
    loss = dict(gan_mode=gan_mode,
                lambda_feat=0.0 if o.boolean("no_ganFeat_loss", False) else o.number("lambda_feat", float, 10.0),
                perceptual="none" if no_vgg else "vgg19", lambda_perceptual=o.number("lambda_vgg", float, 10.0),
                lambda_kld=o.number("lambda_kld", float, 0.05))
    ttur = not o.boolean("no_TTUR", False)
    beta1, beta2 = o.number("beta1", float, 0.0), o.number("beta2", float, 0.9)
    if ttur:
        beta1, beta2 = TTUR_BETAS  # what the original trains with, whatever opt.txt says
    optim = dict(lr=o.number("lr", float, 2e-4), ttur=ttur, beta1=beta1, beta2=beta2)
    train = dict(batch_size=o.number("batchSize", int, 1), d_steps_per_g=o.number("D_steps_per_G", int, 1),
                 amp=False)  # the original trains in fp32

    if o.problems:
        raise ConfigError(f"{source}: spade-bench cannot express these options of the original: "
                          f"{'; '.join(o.problems)}")
    if generator["use_vae"] and data["crop_size"] < 256:
        warnings.warn(
            f"{source}: crop_size {data['crop_size']} with use_vae: the original's encoder cannot run these "
            f"weights (it resizes every photo to 256x256 and drops its sixth layer below crop 256, so its 8x8 map "
            f"does not fit fc_mu); spade-bench's encoder resizes to 128x128 and keeps five layers, so z from a "
            f"style photo is spade-bench's own, with no original counterpart to compare it with", stacklevel=2)
    flat = {f"data.{k}": v for k, v in data.items()}
    flat.update({f"generator.{k}": v for k, v in generator.items()})
    # The original's encoder is ngf wide (its nef option is unused).
    flat["encoder.ndf"] = ngf
    flat.update({f"discriminator.{k}": v for k, v in discriminator.items()})
    flat.update({f"loss.{k}": v for k, v in loss.items()})
    flat.update({f"optim.{k}": v for k, v in optim.items()})
    flat.update({f"train.{k}": v for k, v in train.items()})
    try:
        cfg = apply_overrides(cfg, flat)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    variant = "pix2pixhd" if cfg.generator.arch == "pix2pixhd" else "spade-vae" if cfg.generator.use_vae else "spade"
    return replace(cfg, variant=variant)


def options_from_config(cfg: RunConfig, name: str) -> dict[str, Any]:
    """The original's options (typed) that build the networks of `cfg`; the reverse of
    `config_from_options`. Raises a ConfigError naming each setting the original cannot express."""
    d, g, e, disc, loss, optim = cfg.data, cfg.generator, cfg.encoder, cfg.discriminator, cfg.loss, cfg.optim
    problems = []
    if g.arch == "concat":
        problems.append("generator.arch=concat (the original has spade and pix2pixhd)")
    if g.cond_norm != "spade":
        problems.append(f"generator.cond_norm={g.cond_norm} (the original's blocks are SPADE; its netG=spade "
                        f"could not load these weights)")
    if g.arch == "spade":
        if g.modulation != "one_plus_gamma":
            problems.append(f"generator.modulation={g.modulation} (the original computes 1 + gamma)")
        if g.spade_hidden != 128:
            problems.append(f"generator.spade_hidden={g.spade_hidden} (the original's is 128)")
    if g.use_vae and e.ndf != g.ngf:
        problems.append(f"encoder.ndf={e.ndf} (the original's encoder is ngf={g.ngf} wide)")
    if problems:
        raise ConfigError(f"the original SPADE code cannot express: {'; '.join(problems)}")
    if loss.perceptual not in ("vgg19", "none") and loss.lambda_perceptual:
        warnings.warn(f"loss.perceptual={loss.perceptual} has no counterpart in the original: opt.txt states "
                      f"no_vgg_loss False (the VGG loss, lambda_vgg {loss.lambda_perceptual}); this matters only "
                      f"when training on with the original code (its test.py does not use it)", stacklevel=2)
    if optim.ttur and (optim.beta1, optim.beta2) != TTUR_BETAS:
        warnings.warn(f"optim.beta1={optim.beta1}, optim.beta2={optim.beta2} with TTUR: opt.txt states them, but "
                      f"the original trains with TTUR's betas {TTUR_BETAS}; this matters only when training on "
                      f"with the original code (its test.py does not use them)", stacklevel=2)
    reverse_modes = {v: k for k, v in DATASET_MODES.items()}
    sn = "spectral" if g.spectral_norm else ""
    opts: dict[str, Any] = {
        "name": name, "model": "pix2pix", "dataset_mode": reverse_modes.get(d.dataset, "custom"),
        "dataroot": d.root or "", "label_nc": d.label_nc, "contain_dontcare_label": d.contain_dontcare,
        "no_instance": not d.use_instance, "preprocess_mode": d.preprocess, "load_size": d.load_size,
        "crop_size": d.crop_size, "aspect_ratio": d.aspect_ratio, "no_flip": not d.flip, "output_nc": 3,
        "ngf": g.ngf, "ndf": disc.ndf, "nef": 16, "use_vae": g.use_vae, "z_dim": g.z_dim,
        "num_upsampling_layers": g.num_upsampling_layers,
        "netD": "multiscale", "netD_subarch": "n_layer", "num_D": disc.num_D, "n_layers_D": disc.n_layers,
        "norm_D": ("spectral" if disc.spectral_norm else "") + ("" if disc.norm == "none" else disc.norm),
        "norm_E": "spectralinstance", "gan_mode": loss.gan_mode,
        "no_ganFeat_loss": not loss.lambda_feat, "lambda_feat": loss.lambda_feat or 10.0,
        "no_vgg_loss": loss.perceptual == "none" or not loss.lambda_perceptual,
        "lambda_vgg": loss.lambda_perceptual, "lambda_kld": loss.lambda_kld,
        "lr": optim.lr, "no_TTUR": not optim.ttur, "beta1": optim.beta1, "beta2": optim.beta2,
        "batchSize": cfg.train.batch_size, "D_steps_per_G": cfg.train.d_steps_per_g, "optimizer": "adam",
        "init_type": "xavier", "init_variance": 0.02, "isTrain": False, "which_epoch": "latest",
        "semantic_nc": d.semantic_channels,
    }
    if g.arch == "spade":
        opts.update(netG="spade", norm_G=f"{sn}spade{g.param_free_norm}{g.spade_kernel}x{g.spade_kernel}")
    else:
        opts.update(netG="pix2pixhd", norm_G=f"{sn}{g.pix2pixhd_norm}",
                    resnet_n_downsample=g.pix2pixhd_downsamples, resnet_n_blocks=g.pix2pixhd_blocks,
                    resnet_kernel_size=3, resnet_initial_kernel_size=7)
    return opts


def format_options(opts: dict[str, Any]) -> str:
    """opt.txt text in the original's layout (`save_options`)."""
    return "".join(f"{k:>25}: {str(v):<30}\n" for k, v in sorted(opts.items()))


# ============================================================================= state dicts

def from_nvlabs_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original's state-dict keys -> spade-bench's (spectral norm's three tensors renamed)."""
    out = {}
    for key, value in state.items():
        prefix, _, last = key.rpartition(".")
        out[f"{prefix}.{_SN_SUFFIXES[last]}" if last in _SN_SUFFIXES else key] = value
    return out


def to_nvlabs_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """spade-bench's state-dict keys -> the original's."""
    reverse = {v: k for k, v in _SN_SUFFIXES.items()}
    out = {}
    for key, value in state.items():
        for ours, theirs in reverse.items():
            if key.endswith("." + ours):
                key = key[: -len(ours)] + theirs
                break
        out[key] = value
    return out


def _load_weights(net: torch.nn.Module, path: Path) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # Which refusal to give, never the file's own text (its author controls it).
        if "weights only" in str(e).lower():
            raise CheckpointError(f"{path} refused: not a plain-tensor file (it holds Python objects that only a "
                                  f"full unpickle would build, and unpickling can run code from the file); "
                                  f"replace it with the released file") from None
        raise CheckpointError(f"{path} cannot be read (not a torch file): it is truncated or corrupt; replace it "
                              f"with a good copy") from None
    except Exception as e:  # noqa: BLE001 - any unreadable file becomes one clear message
        raise CheckpointError(f"{path} cannot be read ({type(e).__name__}): it is truncated or corrupt; replace "
                              f"it with a good copy") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a state dict of tensors (got {type(state).__name__})")
    for key, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: tensor {key} holds NaN or infinite values; nothing was imported "
                                  f"(replace the file with a good copy)")
    state = from_nvlabs_keys(state)
    # Checkpoints saved by an older PyTorch may lack batch norm's step counter; it is not
    # used by the original's or our momentum-based running averages.
    for key, value in net.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    # Compared before loading: load_state_dict raises its own RuntimeError on a shape mismatch.
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [f"{k} (file {tuple(state[k].shape)}, network {tuple(own[k].shape)})"
             for k in state if k in own and own[k].shape != state[k].shape]
    if missing or unexpected or shape:
        parts = []
        for label, names in (("missing", missing), ("unexpected", unexpected), ("shape", shape)):
            if names:
                more = f" and {len(names) - 4} more" if len(names) > 4 else ""
                parts.append(f"{label} {', '.join(names[:4])}{more}")
        raise CheckpointError(f"{path} does not fit the network opt.txt describes ({'; '.join(parts)}); "
                              f"check that opt.txt belongs to these weights")
    net.load_state_dict(state, strict=True)


# ============================================================================= import / export

def import_nvlabs(checkpoint_dir: str | Path, out: str | Path, *, dataset: Optional[str] = None,
                  root: Optional[str] = None, overrides: Optional[list[str]] = None) -> dict[str, Any]:
    """Write a spade-bench run directory at `out` from an NVlabs checkpoint folder.

    Args:
        checkpoint_dir: folder with opt.txt and latest_net_G.pth (D and E optional; E is
            required when the options use the VAE).
        out: new run directory (refused if it already holds checkpoints).
        dataset, root: the spade-bench dataset to evaluate and fine-tune on (default: from
            the original's dataset_mode, without a root).
        overrides: `section.key=value` settings applied after the mapping (for example
            train.steps for fine-tuning, or data.dont_care_value).

    Returns the provenance record (also written to RUN/provenance.json).
    """
    source, out = Path(checkpoint_dir).resolve(), Path(out)
    raw = read_options(source / "opt.txt")
    files = {role: source / name for role, name in NETWORK_FILES.items() if (source / name).is_file()}
    if "generator" not in files:
        raise CheckpointError(f"{source} has no {NETWORK_FILES['generator']}; pass the folder that holds it")
    cfg = config_from_options(raw, dataset=dataset, root=root, source=str(source / "opt.txt"),
                              roles=tuple(files))
    try:
        if overrides:
            cfg = apply_overrides(cfg, overrides)
        validate(cfg)
    except ConfigError as e:
        raise ConfigError(f"{source / 'opt.txt'} with --set {' '.join(overrides or []) or '(none)'}: {e}") from None
    if out.exists() and any(out.iterdir()):
        what = "checkpoints" if ckpt.has_checkpoint(out) else "files"
        raise CheckpointError(f"{out} already holds {what}; choose another --out (nothing was overwritten)")
    if cfg.generator.use_vae and "encoder" not in files:
        raise CheckpointError(f"{source} uses the VAE (use_vae True) but has no {NETWORK_FILES['encoder']}")
    if not cfg.generator.use_vae:
        files.pop("encoder", None)
    try:
        engine = GANEngine(cfg, device=torch.device("cpu"))
    except WeightsError as e:
        raise WeightsError(f"{e} (opt.txt trains with the VGG loss, mapped to loss.perceptual=vgg19; "
                           f"or import with --set loss.perceptual=effnet-lite0 or none, which only "
                           f"changes fine-tuning)") from None
    nets = {"generator": engine.generator, "discriminator": engine.discriminator, "encoder": engine.encoder}
    for role, path in files.items():
        _load_weights(nets[role], path)
    if engine.ema is not None:  # built as a copy of the initial weights: it starts from the imported ones
        engine.ema.load_state_dict(unwrap(engine.generator).state_dict())
    if (bad := engine.nonfinite_weights()) is not None:   # a network initialised here is finite
        raise CheckpointError(f"{source}: tensor {bad} holds NaN or infinite values; nothing was imported "
                              f"(replace the file with a good copy)")
    now = time.time()
    provenance = {
        "source": "nvlabs",
        "note": "imported from NVlabs",
        "source_dir": str(source),
        "files": {path.name: sha256_file(path) for path in [source / "opt.txt", *files.values()]},
        "networks": {role: ("imported" if role in files else "initialised (not in the folder)")
                     for role in ("generator", "discriminator") + (("encoder",) if cfg.generator.use_vae else ())},
        "options": raw,
        "imported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
    }
    # Written as a whole: a failure part way leaves no half-imported run behind.
    with staged_folder(out, what="run folder") as staging:
        folder = RunFolder(staging)
        save_config(cfg, folder.config)
        write_json(folder.env, environment_record(engine.device, engine.info, numerics_mode=engine.numerics_mode))
        write_provenance(staging, provenance)
        ckpt.save_checkpoint(staging, 0, ckpt.training_state(cfg, 0, engine.state_dict()), cfg.train.keep_checkpoints)
        summary = {"status": "finished", "step": 0, "steps": 0, "images_per_s": None, "peak_memory_gib": None,
                   "peak_memory_kind": None, "wall_time_s": 0.0, "device": "cpu", "hardware": None,
                   "world_size": 1, "amp_bf16": False, "ema": cfg.train.ema, "imported": "nvlabs",
                   "checkpoint": str(ckpt.step_path(out, 0))}
        write_json(folder.summary, summary)
    return provenance


def export_nvlabs(run_dir: str | Path, out: str | Path, *, checkpoint: str = "latest",
                  name: Optional[str] = None) -> dict[str, Path]:
    """Write `run_dir`'s networks as an NVlabs checkpoint folder that the original's test.py loads.

    G is the EMA generator when the run kept one (what spade-bench evaluates). Returns
    {file name: path}.
    """
    run_dir, out = Path(run_dir), Path(out)
    cfg_path = RunFolder(run_dir).config
    if not cfg_path.is_file():
        raise CheckpointError(f"{run_dir} is not a run directory (no {cfg_path.name}); pass the folder `train --out` wrote")
    cfg = load_config_file(cfg_path)
    opts = options_from_config(cfg, name or out.name)
    state = ckpt.load_checkpoint(ckpt.resolve_checkpoint(run_dir, checkpoint))
    nets = {"generator": state["ema"] if cfg.train.ema and state.get("ema") is not None else state["generator"],
            "discriminator": state.get("discriminator"), "encoder": state.get("encoder")}
    provenance = read_provenance(run_dir) or {}
    made_here = {role for role, how in (provenance.get("networks") or {}).items() if how != "imported"}
    if int(state["step"]) == 0 and made_here & {"discriminator", "encoder"}:
        # Random weights from the import, never trained: the original's --continue_train would
        # take them for a trained network. Leave the file out instead.
        for role in sorted(made_here & {"discriminator", "encoder"}):
            nets[role] = None
            warnings.warn(f"{NETWORK_FILES[role]} not written: {run_dir}'s {role} was initialised at import "
                          f"(the NVlabs folder had none) and never trained; the original's test.py does not need "
                          f"it, and its --continue_train must not start from random weights", stacklevel=2)
    written = {}
    out.mkdir(parents=True, exist_ok=True)
    for role, weights in nets.items():
        if weights is None:
            continue
        target = out / NETWORK_FILES[role]
        plain = {k: v.detach().cpu().clone() for k, v in to_nvlabs_keys(weights).items()}
        atomic_write(target, lambda f, plain=plain: torch.save(plain, f))
        written[target.name] = target
    atomic_write_text(out / "opt.txt", format_options(opts))
    # The original's --load_from_opt_file reads opt.pkl (an argparse Namespace).
    atomic_write(out / "opt.pkl", lambda f: pickle.dump(argparse.Namespace(**opts), f))
    written["opt.txt"], written["opt.pkl"] = out / "opt.txt", out / "opt.pkl"
    return written


__all__ = ["read_options", "config_from_options", "options_from_config", "format_options", "from_nvlabs_keys",
           "to_nvlabs_keys", "import_nvlabs", "export_nvlabs", "NETWORK_FILES"]
