"""The one Trainer every variant uses: explicit generator and discriminator steps.

Variants never subclass this. They change the RunConfig; the Trainer builds networks,
losses ({name: (module, weight)}), optimisers and data from it. The same code runs on a CPU,
one GPU, or many GPUs and nodes under torchrun (DDP).

Each iteration (as in the original): a generator step every `d_steps_per_g` iterations,
then a discriminator step, on the same batch. `train.steps` counts iterations.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import json
import math
import os
import platform
import random
import signal
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torchvision
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.utils import save_image
from tqdm import tqdm

import spade_bench
from spade_bench import checkpoint as ckpt
from spade_bench.config import RunConfig, config_hash, experiment_diff, save_config, to_dict
from spade_bench.data import build_dataset, colorize_labels, semantic_input
from spade_bench.data.loader import size_note
from spade_bench.discriminators import build_discriminator, discriminate
from spade_bench.distributed import (DistInfo, all_reduce_max, cleanup, init_distributed, prepare_batchnorm,
                                     resolve_threads, torch_threads, unwrap, wrap_for_training)
from spade_bench.encoders import build_encoder, reparameterize
from spade_bench.errors import CheckpointError, ConfigError, TrainingError, TrainingInterrupted
from spade_bench.generators import build_generator
from spade_bench.io import atomic_write_json, check_output_folder
from spade_bench.losses import GANLoss, build_generator_losses, generator_loss_values


# ----------------------------------------------------------------------------- data order

class SeededSamples(Dataset):
    """Wrap a dataset so each sample's augmentation draws from a seed carried with its index.

    Keys are (index, seed). Random crops and flips then depend only on (run seed, epoch,
    index), not on worker scheduling, which makes a resumed run see the same batches.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            np.random.seed(seed % (2 ** 32))
            torch.manual_seed(seed)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


class ResumableBatchSampler:
    """Batches of (index, seed) in a per-epoch order, able to start mid-epoch.

    The order comes from a DistributedSampler (seeded, set_epoch), so every rank sees its
    own shard; without DDP it is the single-rank case of the same sampler.
    """

    def __init__(self, size: int, batch_size: int, seed: int, info: DistInfo):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.sampler = DistributedSampler(range(size), num_replicas=info.world_size, rank=info.rank,
                                          shuffle=True, seed=seed, drop_last=True)
        self.batches_per_epoch = len(self.sampler) // batch_size
        if self.batches_per_epoch == 0:
            raise ConfigError(
                f"the training set has {size} samples, fewer than one batch of {batch_size} per rank "
                f"({info.world_size} rank(s)); lower train.batch_size")
        self.start_epoch = 0
        self.start_batch = 0

    def set_position(self, epoch: int, batch: int) -> None:
        """Start the next iteration at batch `batch` of epoch `epoch`."""
        self.start_epoch, self.start_batch = epoch, batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        # Locals only: a DataLoader prefetches ahead, so the consumer tracks the position.
        epoch, start = self.start_epoch, self.start_batch
        while True:
            self.sampler.set_epoch(epoch)
            order = list(self.sampler)
            for b in range(start, self.batches_per_epoch):
                idx = order[b * self.batch_size:(b + 1) * self.batch_size]
                yield [(i, (self.seed * 1_000_003 + epoch) * 1_000_033 + i) for i in idx]
            epoch, start = epoch + 1, 0


# ----------------------------------------------------------------------------- helpers

def autocast(device: torch.device, enabled: bool):
    """bf16 autocast with fp32 master weights; a no-op context when disabled."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


# Under DDP, steps between the checks of whether any rank got a stop signal (each is an
# all-reduce and a host sync); a scheduler's warning (SLURM --signal=USR1@180) is far longer.
STOP_POLL_STEPS = 10


def code_state() -> dict[str, Any]:
    """{"commit": HEAD of the git tree this code runs from, "dirty": whether tracked files differ
    from it}; both None outside a git tree (an installed wheel) or without git. Recorded in
    env.json by training and in metrics.json by evaluation."""
    source = Path(__file__).resolve().parent

    def git(*args: str) -> Optional[str]:
        try:
            out = subprocess.run(["git", *args], cwd=source, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {"commit": None, "dirty": None}
    # Tracked files only: run outputs and caches inside the tree do not make the code dirty.
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def environment_record(device: torch.device, info: DistInfo) -> dict[str, Any]:
    rec = {
        "python": sys.version.split()[0], "torch": torch.__version__, "torchvision": torchvision.__version__,
        "spade_bench": spade_bench.__version__, "platform": platform.platform(),
        "hostname": platform.node(), "device": str(device), "world_size": info.world_size,
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "argv": sys.argv,
    }
    code = code_state()
    rec["git_commit"], rec["git_dirty"] = code["commit"], code["dirty"]
    if device.type == "cuda":
        rec["cuda"] = torch.version.cuda
        rec["cudnn"] = torch.backends.cudnn.version()
        rec["gpu"] = torch.cuda.get_device_name(device)
    return rec


def hardware_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def peak_memory_gib(device: torch.device) -> float:
    """CUDA: peak allocated. CPU: the process's lifetime peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    import resource  # function-local: Unix only
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # Linux: KiB


def current_rss_gib() -> float:
    """Resident set size now (Linux /proc; 0 elsewhere). Sampled during a run, its maximum is
    that run's CPU peak even when several runs share one process (as `ablate` does)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 30
    except (OSError, ValueError, IndexError):
        return 0.0


STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGUSR1")


def ignore_stop_signals(worker_id: int = 0) -> None:
    """DataLoader worker_init_fn: a Ctrl-C or a scheduler's SIGTERM reaches the whole process
    group; workers ignore it, so the main process can finish its step and shut them down."""
    for name in STOP_SIGNALS:
        number = getattr(signal, name, None)
        if number is not None:
            signal.signal(number, signal.SIG_IGN)


class StopSignals:
    """Catch SIGINT, SIGTERM and SIGUSR1 while training, so the loop can stop cleanly.

    Used as a context manager in the main thread (signal handlers can only be installed
    there; elsewhere it does nothing). The first signal is only recorded in `received`; the
    trainer finishes its step, saves and stops. A second copy of the same signal raises
    KeyboardInterrupt at once, for a run that is stuck. The previous handlers come back on exit.
    """

    def __init__(self):
        self.received: Optional[str] = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.received == name:
            raise KeyboardInterrupt(f"second {name}")
        self.received = self.received or name

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for name in STOP_SIGNALS:
                number = getattr(signal, name, None)
                if number is not None:
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)  # None: set outside Python
        self._previous.clear()


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    images_per_s: float
    peak_memory_gib: float
    wall_time_s: float
    status: str
    already_finished: bool = False


# ----------------------------------------------------------------------------- networks

def lr_factor(step: int, steps: int, decay_steps: int) -> float:
    """Learning-rate multiplier at `step`: 1, then linear to 0 over the last decay_steps."""
    start = steps - decay_steps
    if step < start or decay_steps == 0:
        return 1.0
    return max(0.0, (steps - step) / decay_steps)


@dataclass
class Networks:
    """The trained modules with their optimisers and LR schedules (LambdaLR, `lr_factor`)."""

    generator: nn.Module
    discriminator: nn.Module
    encoder: Optional[nn.Module]
    ema: Optional[nn.Module]
    optim_G: torch.optim.Optimizer
    optim_D: torch.optim.Optimizer
    sched_G: torch.optim.lr_scheduler.LambdaLR
    sched_D: torch.optim.lr_scheduler.LambdaLR

    def trained(self) -> list[nn.Module]:
        return [self.generator, self.discriminator] + ([self.encoder] if self.encoder is not None else [])

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": unwrap(self.generator).state_dict(),
            "discriminator": unwrap(self.discriminator).state_dict(),
            "encoder": unwrap(self.encoder).state_dict() if self.encoder is not None else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optim_G": self.optim_G.state_dict(), "optim_D": self.optim_D.state_dict(),
            "sched_G": self.sched_G.state_dict(), "sched_D": self.sched_D.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], step: int) -> None:
        unwrap(self.generator).load_state_dict(state["generator"])
        unwrap(self.discriminator).load_state_dict(state["discriminator"])
        if self.encoder is not None:
            unwrap(self.encoder).load_state_dict(state["encoder"])
        if self.ema is not None:
            if state.get("ema") is None:
                raise CheckpointError("checkpoint has no EMA weights but train.ema is on")
            self.ema.load_state_dict(state["ema"])
        self.optim_G.load_state_dict(state["optim_G"])
        self.optim_D.load_state_dict(state["optim_D"])
        for name, sched in (("sched_G", self.sched_G), ("sched_D", self.sched_D)):
            if state.get(name) is not None:
                sched.load_state_dict(state[name])
            else:  # a checkpoint from before the schedules were saved (upgrade_checkpoint): put the
                # schedule where an uninterrupted run is after `step` steps, lr included, rather
                # than keep the optimiser's saved lr, which is the previous step's
                sched.last_epoch = step
                for group, base_lr, factor in zip(sched.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas):
                    group["lr"] = base_lr * factor(step)


def build_networks(cfg: RunConfig, info: DistInfo, device: torch.device, channels_last: bool) -> Networks:
    """Generator, discriminator, encoder (+ EMA copy), Adam optimisers and LR schedules.

    Every rank builds the same initial weights (seeded with train.seed).
    """
    tc = cfg.train
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tc.seed)
        nets = [build_generator(cfg), build_discriminator(cfg)]
        encoder = build_encoder(cfg)
    if encoder is not None:
        nets.append(encoder)
    for i, net in enumerate(nets):
        net = prepare_batchnorm(net, info, device).to(device)
        nets[i] = net.to(memory_format=torch.channels_last) if channels_last else net
    generator, discriminator = nets[0], nets[1]
    encoder = nets[2] if len(nets) > 2 else None
    ema = copy.deepcopy(generator).eval().requires_grad_(False) if tc.ema else None
    g_params = list(generator.parameters()) + (list(encoder.parameters()) if encoder is not None else [])
    fused = bool(cfg.optim.fused and device.type == "cuda") or None
    optim_G = torch.optim.Adam(g_params, lr=cfg.optim.lr_G, betas=cfg.optim.betas, fused=fused)
    optim_D = torch.optim.Adam(discriminator.parameters(), lr=cfg.optim.lr_D, betas=cfg.optim.betas, fused=fused)

    def factor(step: int) -> float:
        return lr_factor(step, tc.steps, tc.decay_steps)

    return Networks(generator, discriminator, encoder, ema, optim_G, optim_D,
                    torch.optim.lr_scheduler.LambdaLR(optim_G, factor),
                    torch.optim.lr_scheduler.LambdaLR(optim_D, factor))


def checkpoint_nbytes(nets: Networks) -> int:
    """About the size of one checkpoint: weights, two Adam moments per weight, the EMA copy."""
    weights = sum(ckpt.state_nbytes(m.state_dict()) for m in nets.trained())
    return 3 * weights + (ckpt.state_nbytes(nets.ema.state_dict()) if nets.ema is not None else 0)


# ----------------------------------------------------------------------------- trainer

class Trainer:
    """Train one run directory: the loop, `generator_step` and `discriminator_step`.

    Collaborators: `build_networks` (modules, optimisers, LR schedules),
    `distributed.wrap_for_training` (DDP, torch.compile), `spade_bench.checkpoint` (files,
    checksums, which checkpoint to resume), `LossLogger` (JSONL, CSV, TensorBoard) and
    `StopSignals` (graceful stop).

    Args:
        cfg: the resolved run config (saved as RUN/config.json).
        run_dir: where everything goes.
        resume: continue from the newest good checkpoint (a corrupt newer one is reported and
            skipped). Refused if the saved config differs in any experiment key; without it, a
            run dir that has checkpoints is refused. With no checkpoint it starts at step 0,
            unless require_checkpoint.
        resume_from: continue from this step's checkpoint (implies resume and
            require_checkpoint); newer step files are moved to checkpoints/superseded-<step>/.
        require_checkpoint: with resume, no checkpoint is an error (the CLI's --resume).
        info, device: from `spade_bench.distributed.init_distributed`.
        hooks: callables `hook(event, trainer)` for events "checkpoint" and "log".
        progress: show a progress bar on rank 0.
        with_data: build the datasets and check the run dir (off for `spade-bench bench`,
            which feeds random tensors).
    """

    def __init__(self, cfg: RunConfig, run_dir: str | Path, *, resume: bool = False,
                 resume_from: Optional[int] = None, require_checkpoint: bool = False,
                 info: DistInfo = DistInfo(), device: Optional[torch.device] = None,
                 hooks: Optional[list[Callable[[str, "Trainer"], None]]] = None, progress: bool = True,
                 with_data: bool = True):
        self.cfg, self.run_dir, self.info = cfg, Path(run_dir), info
        self.device = device or torch.device("cpu")
        self.hooks = list(hooks or [])
        self.progress = progress and info.is_main
        tc = cfg.train
        self.on_cuda = self.device.type == "cuda"
        self.use_amp = tc.amp and (self.on_cuda or tc.amp_cpu)
        self.channels_last = tc.channels_last and self.on_cuda
        if tc.batch_size % info.world_size:
            raise ConfigError(f"train.batch_size {tc.batch_size} is not divisible by the "
                              f"{info.world_size} processes; it is the global batch")
        self.local_batch = tc.batch_size // info.world_size
        resume = resume or resume_from is not None
        self._set_determinism()
        if with_data:
            self._check_run_dir(resume)

        self.nets = build_networks(cfg, info, self.device, self.channels_last)
        torch.manual_seed(tc.seed + info.rank)
        np.random.seed((tc.seed + info.rank) % 2 ** 32)
        random.seed(tc.seed + info.rank)
        if with_data and info.is_main:
            check_output_folder(self.run_dir, checkpoint_nbytes(self.nets), what="run folder")
        # Losses: {name: (module, weight)}; an ablation drops or reweights a term in config.
        self.generator_losses = {name: (module.to(self.device), weight)
                                 for name, (module, weight) in build_generator_losses(cfg).items()}
        self.gan_loss = GANLoss(cfg.loss.gan_mode).to(self.device)
        wrap_for_training(self.nets, info, self.device, compile=tc.compile)

        if with_data:
            self.train_set = build_dataset(cfg.data, "train")
            self.sampler = ResumableBatchSampler(len(self.train_set), self.local_batch, tc.seed, info)
            self.val_set = build_dataset(cfg.data, "val")
            note = size_note(self.train_set, cfg.data)
            if note and info.is_main:
                warnings.warn(note, stacklevel=2)

        self.step = 0
        self.data_position = [0, 0]  # (epoch, batch) of the next batch to train on
        self._prior_wall_time = 0.0
        self._start_time = time.time()  # fit() resets it; save() before fit() (import-nvlabs) needs it
        self._error: Optional[str] = None
        self._bad_record = torch.full((), -1, dtype=torch.long, device=self.device)
        self._loss_names: list[str] = []
        self._log_record: Optional[dict[str, float]] = None
        self.images_per_s = float("nan")
        if with_data and resume:
            if ckpt.has_checkpoint(self.run_dir) or resume_from is not None:
                self._resume(resume_from)
            elif require_checkpoint:
                raise CheckpointError(
                    f"--resume: {self.run_dir} has no checkpoint to resume from; train it without --resume "
                    f"(or pass the --out of an earlier run)")

    # The trained modules, as the steps and `spade-bench bench` use them.
    @property
    def generator(self) -> nn.Module:
        return self.nets.generator

    @property
    def discriminator(self) -> nn.Module:
        return self.nets.discriminator

    @property
    def encoder(self) -> Optional[nn.Module]:
        return self.nets.encoder

    @property
    def ema(self) -> Optional[nn.Module]:
        return self.nets.ema

    @property
    def optim_G(self) -> torch.optim.Optimizer:
        return self.nets.optim_G

    @property
    def optim_D(self) -> torch.optim.Optimizer:
        return self.nets.optim_D

    # ------------------------------------------------------------------ set-up

    def _set_determinism(self) -> None:
        tc = self.cfg.train
        # fit() trains with this many threads and restores the caller's count after, so a run
        # never leaves its thread count to whatever the process does next.
        self.threads = 1 if tc.deterministic else resolve_threads(tc.threads, self.info)
        if tc.deterministic:
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            return
        if self.on_cuda:
            torch.backends.cudnn.benchmark = tc.cudnn_benchmark
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def _check_run_dir(self, resume: bool) -> None:
        saved = self.run_dir / "config.json"
        has_ckpt = ckpt.has_checkpoint(self.run_dir)
        if has_ckpt and not resume:
            raise CheckpointError(
                f"{self.run_dir} already holds checkpoints; pass --resume to continue it, "
                f"or choose another --out (nothing was overwritten)")
        if resume and saved.is_file() and has_ckpt:
            try:
                old = json.loads(saved.read_text())
            except json.JSONDecodeError as e:
                raise CheckpointError(f"{saved} is not valid JSON ({e})") from None
            if experiment_diff(old, self.cfg):
                raise CheckpointError(
                    f"refusing to resume {self.run_dir}: {ckpt.config_mismatch_message(old, self.cfg, str(saved))}. "
                    f"Resume with the saved config (spade-bench train --config {saved} --resume), "
                    f"or start a new run with another --out")

    def _resume(self, resume_from: Optional[int]) -> None:
        path, state, skipped = ckpt.find_resume_checkpoint(self.run_dir, resume_from)
        for problem in skipped:
            warnings.warn(f"skipped a corrupt checkpoint: {problem}; resuming from {path}", stacklevel=2)
        if experiment_diff(state.get("config", {}), self.cfg):  # values, not hashes of older rules
            raise CheckpointError(
                f"refusing to resume from {path}: {ckpt.config_mismatch_message(state.get('config', {}), self.cfg, 'the checkpoint')}. "
                f"Resume with the run's own config (spade-bench train --out {self.run_dir} --resume, with no "
                f"other options), or start a new run with another --out")
        self.step = int(state["step"])
        self.nets.load_state_dict(state, self.step)
        self.data_position = list(state["data_position"])
        self.sampler.set_position(*self.data_position)
        self._prior_wall_time = float(state.get("wall_time_s", 0.0))
        self._log_record = state.get("log_record")
        rng = state["rng"][self.info.rank] if self.info.rank < len(state["rng"]) else state["rng"][0]
        ckpt.set_rng_state(rng)
        newer = [(s, p) for s, p in ckpt.list_step_checkpoints(self.run_dir) if s > self.step]
        if newer and self.info.is_main:
            aside = self.run_dir / ckpt.CHECKPOINT_DIR / f"superseded-{self.step}"
            aside.mkdir(exist_ok=True)
            for _, p in newer:
                os.replace(p, aside / p.name)
            ckpt.point_latest(path if path.name != ckpt.LATEST else ckpt.step_path(self.run_dir, self.step))
            warnings.warn(f"resuming from step {self.step}: the newer checkpoints "
                          f"({', '.join(str(s) for s, _ in newer)}) were moved to {aside}", stacklevel=2)

    # ------------------------------------------------------------------ inputs

    def _prepare(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        label = batch["label"].to(self.device, non_blocking=True)
        instance = batch.get("instance")
        if instance is not None:
            instance = instance.to(self.device, non_blocking=True)
        image = batch["image"].to(self.device, non_blocking=True)
        # No range check here: it would sync the device every step, and each sample was
        # checked when its file was read.
        segmap = semantic_input(label, instance, self.cfg.data, check_range=False)
        if self.channels_last:
            segmap = segmap.contiguous(memory_format=torch.channels_last)
            image = image.contiguous(memory_format=torch.channels_last)
        return segmap, image

    def _generate(self, segmap: torch.Tensor, image: torch.Tensor, generator: Optional[nn.Module] = None,
                  encoder: Optional[nn.Module] = None):
        generator = self.generator if generator is None else generator
        encoder = self.encoder if encoder is None else encoder
        mu = logvar = z = None
        if encoder is not None:
            mu, logvar = encoder(image)
            z = reparameterize(mu, logvar)
        return generator(segmap, z), mu, logvar

    # ------------------------------------------------------------------ steps

    def generator_step(self, segmap: torch.Tensor, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """One generator (and encoder) update: GAN + feature matching + perceptual (+ KL)."""
        self.optim_G.zero_grad(set_to_none=True)
        # D's own weights get no gradient here: running the unwrapped D keeps DDP from
        # synchronising gradients that the D step would discard anyway.
        disc = unwrap(self.discriminator).requires_grad_(False)
        with autocast(self.device, self.use_amp):
            fake, mu, logvar = self._generate(segmap, image)
            pred_fake, pred_real = discriminate(disc, segmap, fake, image)
            losses = generator_loss_values(self.generator_losses, pred_fake=pred_fake, pred_real=pred_real,
                                           fake=fake, real=image, mu=mu, logvar=logvar)
        total = sum(losses.values())
        total.backward()
        self.optim_G.step()
        disc.requires_grad_(True)
        if self.ema is not None:
            self._update_ema()
        out = {f"G/{k}": v.detach() for k, v in losses.items()}
        out["G/total"] = total.detach()
        return out

    def discriminator_step(self, segmap: torch.Tensor, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """One discriminator update on detached fakes: hinge (or ls/BCE) on fake and real."""
        self.optim_D.zero_grad(set_to_none=True)
        with torch.no_grad(), autocast(self.device, self.use_amp):
            fake, _, _ = self._generate(segmap, image)
        fake = fake.detach()
        with autocast(self.device, self.use_amp):
            pred_fake, pred_real = discriminate(self.discriminator, segmap, fake, image)
        loss_fake = self.gan_loss(pred_fake, False, for_discriminator=True).float()
        loss_real = self.gan_loss(pred_real, True, for_discriminator=True).float()
        total = loss_fake + loss_real
        total.backward()
        self.optim_D.step()
        return {"D/fake": loss_fake.detach(), "D/real": loss_real.detach(), "D/total": total.detach()}

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = self.cfg.train.ema_decay
        src = unwrap(self.generator)
        for e, p in zip(self.ema.parameters(), src.parameters()):
            e.lerp_(p.detach(), 1 - decay)
        for e, b in zip(self.ema.buffers(), src.buffers()):
            e.copy_(b)

    # ------------------------------------------------------------------ bookkeeping

    def _track_finite(self, losses: dict[str, torch.Tensor]) -> None:
        """Remember the first (step, loss) that went non-finite, without a host sync."""
        for name in losses:
            if name not in self._loss_names:
                self._loss_names.append(name)
        zero = torch.zeros((), device=self.device)
        values = torch.stack([losses.get(n, zero).float() for n in self._loss_names])
        bad = ~torch.isfinite(values)
        first = torch.argmax(bad.float())
        code = self.step * 64 + first
        self._bad_record = torch.where((self._bad_record < 0) & bad.any(), code, self._bad_record)

    def _raise_if_nonfinite(self) -> None:
        code = int(self._bad_record.item())
        if code < 0:
            return
        step, index = divmod(code, 64)
        name = self._loss_names[index] if index < len(self._loss_names) else "?"
        latest = ckpt.latest_path(self.run_dir)
        kept = f"the last good checkpoint is {latest}" if latest.is_file() else "no checkpoint had been written"
        raise TrainingError(
            f"non-finite loss {name} at step {step + 1}; training stopped and {kept}. "
            f"Try a lower optim.lr, loss.gan_mode=hinge, or train.amp=false")

    def _state(self) -> dict[str, Any]:
        rng = ckpt.rng_state()
        if self.info.is_distributed:
            gathered: list[Any] = [None] * self.info.world_size
            dist.all_gather_object(gathered, rng)
            rng_all = gathered
        else:
            rng_all = [rng]
        return {
            "step": self.step,
            **self.nets.state_dict(),
            "data_position": tuple(self.data_position),
            "wall_time_s": self._prior_wall_time + time.time() - self._start_time,
            "rng": rng_all,
            "config": to_dict(self.cfg),
            "config_hash": config_hash(self.cfg),
            "log_record": self._log_record,
        }

    def _weights_finite(self) -> bool:
        return all(torch.isfinite(p).all() for n in self.nets.trained() for p in n.parameters())

    def save(self) -> Optional[Path]:
        """Write a checkpoint (rank 0), never one with non-finite weights."""
        self._raise_if_nonfinite()
        if not self._weights_finite():
            raise TrainingError(f"non-finite weights at step {self.step}; not writing a checkpoint "
                                f"(the last good one stays in {self.run_dir / ckpt.CHECKPOINT_DIR})")
        state = self._state()  # collective under DDP: every rank takes part
        path = None
        if self.info.is_main:
            path = ckpt.save_checkpoint(self.run_dir, self.step, state, self.cfg.train.keep_checkpoints)
        for hook in self.hooks:
            hook("checkpoint", self)
        return path

    @torch.no_grad()
    def _sample_grid(self) -> None:
        """Label colours | generated | real for a fixed validation batch (no training side effects)."""
        n = min(4, len(self.val_set))
        items = [self.val_set[i] for i in range(n)]
        label = torch.stack([it["label"] for it in items]).to(self.device)
        inst = torch.stack([it["instance"] for it in items]).to(self.device) if "instance" in items[0] else None
        real = torch.stack([it["image"] for it in items]).to(self.device)
        segmap = semantic_input(label, inst, self.cfg.data)
        gen = self.ema if self.ema is not None else unwrap(self.generator)
        enc = unwrap(self.encoder) if self.encoder is not None else None
        was_training = gen.training
        gen.eval()
        if enc is not None:
            enc.eval()
        with torch.random.fork_rng(devices=[self.device] if self.on_cuda else []):
            torch.manual_seed(0)
            fake, _, _ = self._generate(segmap, real, gen, enc)
        gen.train(was_training)
        if enc is not None:
            enc.train()
        colours = colorize_labels(label, self.cfg.data).float().to(self.device) / 255.0
        rows = torch.cat([colours, (fake.float() + 1) / 2, (real + 1) / 2], dim=3).clamp(0, 1)
        path = self.run_dir / "samples" / f"step_{self.step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(rows, path, nrow=1, padding=2)

    # ------------------------------------------------------------------ loop

    def fit(self) -> TrainResult:
        """Train to `train.steps`, checkpointing, logging and sampling along the way, on
        `self.threads` intra-op threads (train.threads), restoring the caller's count after.

        On SIGINT, SIGTERM or SIGUSR1 it finishes the step, saves and raises TrainingInterrupted.
        """
        with torch_threads(self.threads):
            return self._fit()

    def _fit(self) -> TrainResult:
        tc = self.cfg.train
        start_time = self._start_time = time.time()
        if self.info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.run_dir / "config.json")
            atomic_write_json(self.run_dir / "env.json", environment_record(self.device, self.info))
            self._write_summary("running", start_time)
        logger = LossLogger(self.run_dir / "logs", enabled=self.info.is_main, resume_step=self.step,
                            resume_record=self._log_record)

        workers = self.cfg.data.num_workers
        # Its own generator: creating the iterator must not draw from the global RNG, or a
        # resumed run would diverge from a straight one.
        loader = DataLoader(SeededSamples(self.train_set), batch_sampler=self.sampler, num_workers=workers,
                            pin_memory=self.on_cuda, persistent_workers=workers > 0,
                            prefetch_factor=4 if workers > 0 else None, worker_init_fn=ignore_stop_signals,
                            generator=torch.Generator().manual_seed(tc.seed))
        bar = tqdm(total=tc.steps, initial=self.step, disable=not self.progress, unit="step",
                   dynamic_ncols=True, desc=f"train {self.cfg.variant}")
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        interval_start, interval_images = time.time(), 0
        rates: list[float] = []
        rss_peak = current_rss_gib()
        if self.on_cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        status = "failed"
        saved_step = None
        stop = StopSignals()
        try:
            with stop:
                data_iter = iter(loader)
                while self.step < tc.steps:
                    batch = next(data_iter)
                    epoch, index = self.data_position[0], self.data_position[1] + 1
                    self.data_position = [epoch + 1, 0] if index >= self.sampler.batches_per_epoch else [epoch, index]
                    segmap, image = self._prepare(batch)
                    lrs = (self.optim_G.param_groups[0]["lr"], self.optim_D.param_groups[0]["lr"])
                    losses: dict[str, torch.Tensor] = {}
                    if self.step % tc.d_steps_per_g == 0:
                        losses.update(self.generator_step(segmap, image))
                    losses.update(self.discriminator_step(segmap, image))
                    self.nets.sched_G.step()
                    self.nets.sched_D.step()
                    self._track_finite(losses)
                    for k, v in losses.items():
                        sums[k] = sums[k] + v if k in sums else v.clone()
                        counts[k] = counts.get(k, 0) + 1
                    interval_images += self.local_batch * self.info.world_size
                    self.step += 1
                    bar.update(1)

                    # The checkpoint comes before anything optional (log, grid), so none of them can lose it.
                    record = None
                    if self.step % tc.log_every == 0 or self.step == tc.steps:
                        self._raise_if_nonfinite()
                        if self.on_cuda:
                            torch.cuda.synchronize(self.device)
                        elapsed = time.time() - interval_start
                        rate = interval_images / max(elapsed, 1e-9)
                        rates.append(rate)
                        rss_peak = max(rss_peak, current_rss_gib())
                        means = {k: float(v.item()) / counts[k] for k, v in sums.items()}
                        record = {"step": self.step, "time": round(time.time() - start_time, 3), **means,
                                  "lr_G": lrs[0], "lr_D": lrs[1], "images_per_s": rate}
                        sums, counts, interval_start, interval_images = {}, {}, time.time(), 0
                    self._log_record = record  # saved with the checkpoint: a kill right after it keeps it
                    if self.step % tc.checkpoint_every == 0 or self.step == tc.steps:
                        self.save()
                        saved_step = self.step
                    if record is not None:
                        logger.write(record)
                        bar.set_postfix({"G": f"{record.get('G/total', float('nan')):.3f}",
                                         "D": f"{record['D/total']:.3f}", "img/s": f"{record['images_per_s']:.1f}"},
                                        refresh=False)
                        for hook in self.hooks:
                            hook("log", self)
                    if self.info.is_main and (self.step % tc.sample_every == 0 or self.step == tc.steps):
                        self._sample_grid()
                    if self.step < tc.steps and self._stop_requested(stop):
                        path = self.save() if saved_step != self.step else None
                        status = "interrupted"
                        raise TrainingInterrupted(stop.received or "SIGTERM", self.step,
                                                  path or ckpt.step_path(self.run_dir, self.step))
            status = "finished"
        except TrainingInterrupted:
            raise
        except BaseException as e:
            self._error = f"{type(e).__name__}: {e}"
            raise
        finally:
            bar.close()
            logger.close()
            # Steady-state rate: drop the first interval (warm-up, autotuning) when there are more.
            steady = rates[1:] if len(rates) > 1 else rates
            self.images_per_s = float(np.mean(steady)) if steady else float("nan")
            peak = peak_memory_gib(self.device) if self.on_cuda else max(rss_peak, current_rss_gib())
            peak = all_reduce_max(peak, self.device)
            if self.info.is_main:
                self._write_summary(status, start_time, peak, self._error)
        return TrainResult(self.run_dir, self.step, self.images_per_s, peak, time.time() - start_time, status)

    def _stop_requested(self, stop: StopSignals) -> bool:
        """True when a stop signal arrived. Under DDP, when it arrived at any rank, checked every
        STOP_POLL_STEPS steps only: the all-reduce is a host sync, which the step loop otherwise
        avoids. Every rank checks at the same steps, so all stop after the same step."""
        flag = 1.0 if stop.received else 0.0
        if self.info.is_distributed:
            if self.step % STOP_POLL_STEPS:
                return False
            flag = all_reduce_max(flag, self.device)
        return flag > 0

    def _write_summary(self, status: str, start_time: float, peak: Optional[float] = None,
                       error: Optional[str] = None) -> None:
        summary = {
            "status": status, "step": self.step, "steps": self.cfg.train.steps,
            "images_per_s": None if math.isnan(self.images_per_s) else self.images_per_s,
            "peak_memory_gib": peak,
            "peak_memory_kind": "cuda max_memory_allocated" if self.on_cuda else "max resident set size sampled at log steps",
            "wall_time_s": self._prior_wall_time + time.time() - start_time,
            "device": str(self.device), "hardware": hardware_name(self.device),
            "world_size": self.info.world_size, "amp_bf16": self.use_amp, "ema": self.cfg.train.ema,
            "config_hash": config_hash(self.cfg), "threads": torch.get_num_threads(),
        }
        if error:
            summary["error"] = error
        atomic_write_json(self.run_dir / "train_summary.json", summary)


class LossLogger:
    """losses.jsonl + losses.csv + TensorBoard, rank 0 only; a resumed run appends after its step."""

    def __init__(self, folder: Path, *, enabled: bool, resume_step: int,
                 resume_record: Optional[dict[str, Any]] = None):
        self.enabled = enabled
        if not enabled:
            return
        folder.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = folder / "losses.jsonl"
        self.csv_path = folder / "losses.csv"
        if resume_step and self.jsonl_path.is_file():
            # Drop records past the checkpoint we resumed from: they will be recomputed.
            kept = [ln for ln in self.jsonl_path.read_text().splitlines()
                    if ln.strip() and json.loads(ln)["step"] <= resume_step]
            if resume_record and not any(json.loads(ln)["step"] == resume_record["step"] for ln in kept):
                kept.append(json.dumps(resume_record))  # logged after the checkpoint, then the run died
            self.jsonl_path.write_text("".join(ln + "\n" for ln in kept))
        elif self.jsonl_path.exists():
            self.jsonl_path.unlink()
        self.jsonl = open(self.jsonl_path, "a")
        from torch.utils.tensorboard import SummaryWriter  # function-local: slow import, rank 0 only
        self.tb = SummaryWriter(str(folder / "tb"), purge_step=resume_step or None)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        for key, value in record.items():
            if key not in ("step", "time"):
                self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if not self.enabled:
            return
        self.jsonl.close()
        self.tb.close()
        rows = [json.loads(ln) for ln in self.jsonl_path.read_text().splitlines() if ln.strip()]
        keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("step", "time"), k))
        tmp = self.csv_path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.csv_path)



def train_run(cfg: RunConfig, run_dir: str | Path, *, resume: bool = False, resume_from: Optional[int] = None,
              require_checkpoint: bool = False, progress: bool = True, hooks: Optional[list] = None) -> TrainResult:
    """Library entry for `spade-bench train`: set up (DDP when under torchrun), train, clean up.

    A run that already reached train.steps returns at once (already_finished=True) with the
    figures of its train_summary.json.
    """
    info, device = init_distributed(cfg.train.device)
    try:
        trainer = Trainer(cfg, run_dir, resume=resume, resume_from=resume_from,
                          require_checkpoint=require_checkpoint, info=info, device=device, hooks=hooks,
                          progress=progress)
        if trainer.step >= cfg.train.steps:
            summary_path = Path(run_dir) / "train_summary.json"
            summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
            rate = summary.get("images_per_s")
            return TrainResult(Path(run_dir), trainer.step, float("nan") if rate is None else float(rate),
                               float(summary.get("peak_memory_gib") or 0.0), 0.0, "finished", already_finished=True)
        return trainer.fit()
    finally:
        cleanup()


def load_saved_config(run_dir: str | Path) -> RunConfig:
    """The config a run was trained with: RUN/config.json, or the one stored in its newest
    readable checkpoint when config.json is gone (with a warning)."""
    cfg, source = ckpt.saved_run_config(run_dir)
    if source.name != "config.json":
        warnings.warn(f"{Path(run_dir) / 'config.json'} is missing; using the config stored in {source} "
                      f"(training rewrites config.json)", stacklevel=2)
    return cfg
