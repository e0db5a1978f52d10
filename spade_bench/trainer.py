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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from spade_bench import checkpoint as ckpt
from spade_bench.config import RunConfig, config_hash, experiment_diff, load_config_file, save_config, to_dict
from spade_bench.distributed import DistInfo, all_reduce_max, prepare_batchnorm
from spade_bench.errors import CheckpointError, ConfigError, TrainingError, TrainingInterrupted
from spade_bench.io import atomic_write_json


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
        from torch.utils.data import DistributedSampler

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


def git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment_record(device: torch.device, info: DistInfo) -> dict[str, Any]:
    import torchvision

    import spade_bench
    rec = {
        "python": sys.version.split()[0], "torch": torch.__version__, "torchvision": torchvision.__version__,
        "spade_bench": spade_bench.__version__, "git_commit": git_commit(), "platform": platform.platform(),
        "hostname": platform.node(), "device": str(device), "world_size": info.world_size,
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "argv": sys.argv,
    }
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
    import resource
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
            signal.signal(number, handler)
        self._previous.clear()


def unwrap(module: nn.Module) -> nn.Module:
    module = getattr(module, "_orig_mod", module)  # torch.compile
    return getattr(module, "module", module)        # DDP


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    images_per_s: float
    peak_memory_gib: float
    wall_time_s: float
    status: str


# ----------------------------------------------------------------------------- trainer

class Trainer:
    """Train one run directory.

    Args:
        cfg: the resolved run config (saved as RUN/config.json).
        run_dir: where everything goes.
        resume: continue from RUN/checkpoints/latest.pt. Refused if the saved config differs
            in any experiment key; without it, a run dir that has checkpoints is refused.
        info, device: from `spade_bench.distributed.init_distributed`.
        hooks: callables `hook(event, trainer)` for events "checkpoint" and "log".
        progress: show a progress bar on rank 0.
        with_data: build the datasets (off for `spade-bench bench`, which feeds random tensors).
    """

    def __init__(self, cfg: RunConfig, run_dir: str | Path, *, resume: bool = False,
                 info: DistInfo = DistInfo(), device: Optional[torch.device] = None,
                 hooks: Optional[list[Callable[[str, "Trainer"], None]]] = None, progress: bool = True,
                 with_data: bool = True):
        from spade_bench.data import build_dataset
        from spade_bench.discriminators import build_discriminator
        from spade_bench.encoders import build_encoder
        from spade_bench.generators import build_generator
        from spade_bench.losses import GANLoss, build_generator_losses

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

        self._set_determinism()
        if with_data:
            self._check_run_dir(resume)
        torch.manual_seed(tc.seed + info.rank)
        np.random.seed((tc.seed + info.rank) % 2 ** 32)
        random.seed(tc.seed + info.rank)

        # Networks: same initial weights on every rank (DDP also broadcasts them).
        torch.manual_seed(tc.seed)
        self.generator = build_generator(cfg)
        self.discriminator = build_discriminator(cfg)
        self.encoder = build_encoder(cfg)
        torch.manual_seed(tc.seed + info.rank)
        nets = [self.generator, self.discriminator] + ([self.encoder] if self.encoder is not None else [])
        for i, net in enumerate(nets):
            net = prepare_batchnorm(net, info, self.device).to(self.device)
            if self.channels_last:
                net = net.to(memory_format=torch.channels_last)
            nets[i] = net
        self.generator, self.discriminator = nets[0], nets[1]
        self.encoder = nets[2] if len(nets) > 2 else None
        self.ema = copy.deepcopy(self.generator).eval().requires_grad_(False) if tc.ema else None

        g_params = list(self.generator.parameters()) + (list(self.encoder.parameters()) if self.encoder else [])
        fused = bool(cfg.optim.fused and self.on_cuda)
        self.optim_G = torch.optim.Adam(g_params, lr=cfg.optim.lr_G, betas=cfg.optim.betas, fused=fused or None)
        self.optim_D = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.optim.lr_D,
                                        betas=cfg.optim.betas, fused=fused or None)

        # Losses: {name: (module, weight)}; an ablation drops or reweights a term in config.
        self.generator_losses = {name: (module.to(self.device), weight)
                                 for name, (module, weight) in build_generator_losses(cfg).items()}
        self.gan_loss = GANLoss(cfg.loss.gan_mode).to(self.device)

        if info.is_distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [self.device.index] if self.on_cuda else None
            self.generator = DDP(self.generator, device_ids=ids)
            self.discriminator = DDP(self.discriminator, device_ids=ids)
            if self.encoder is not None:
                self.encoder = DDP(self.encoder, device_ids=ids)
        if tc.compile:
            self.generator = torch.compile(self.generator)
            self.discriminator = torch.compile(self.discriminator)

        # Data.
        if with_data:
            self.train_set = build_dataset(cfg.data, "train")
            self.sampler = ResumableBatchSampler(len(self.train_set), self.local_batch, tc.seed, info)
            self.val_set = build_dataset(cfg.data, "val")

        self.step = 0
        self.data_position = [0, 0]  # (epoch, batch) of the next batch to train on
        self._prior_wall_time = 0.0
        self._error: Optional[str] = None
        self._bad_record = torch.full((), -1, dtype=torch.long, device=self.device)
        self._loss_names: list[str] = []
        self.images_per_s = float("nan")
        if with_data and resume and ckpt.latest_path(self.run_dir).is_file():
            self._restore(ckpt.load_checkpoint(ckpt.latest_path(self.run_dir), map_location=self.device))

    # ------------------------------------------------------------------ set-up

    def _set_determinism(self) -> None:
        tc = self.cfg.train
        if tc.deterministic:
            torch.use_deterministic_algorithms(True)
            torch.set_num_threads(1)
            torch.backends.cudnn.benchmark = False
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        elif self.on_cuda:
            torch.backends.cudnn.benchmark = tc.cudnn_benchmark
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def _check_run_dir(self, resume: bool) -> None:
        saved = self.run_dir / "config.json"
        has_ckpt = ckpt.latest_path(self.run_dir).is_file()
        if has_ckpt and not resume:
            raise CheckpointError(
                f"{self.run_dir} already holds checkpoints; pass --resume to continue it, "
                f"or choose another --out (nothing was overwritten)")
        if resume and saved.is_file() and has_ckpt:
            try:
                old = json.loads(saved.read_text())
            except json.JSONDecodeError as e:
                raise CheckpointError(f"{saved} is not valid JSON ({e})") from None
            diff = experiment_diff(old, self.cfg)
            if diff:
                lines = "; ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in diff.items())
                raise CheckpointError(
                    f"refusing to resume {self.run_dir}: the config differs in {', '.join(diff)} ({lines}). "
                    f"Resume with the saved config (spade-bench train --config {saved} --resume), "
                    f"or start a new run with another --out")

    def _restore(self, state: dict[str, Any]) -> None:
        if state.get("config_hash") != config_hash(self.cfg):
            raise CheckpointError(f"checkpoint config hash {state.get('config_hash')} does not match "
                                  f"this run's {config_hash(self.cfg)}")
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
        self.step = int(state["step"])
        self.data_position = list(state["data_position"])
        self.sampler.set_position(*self.data_position)
        self._prior_wall_time = float(state.get("wall_time_s", 0.0))
        rng = state["rng"][self.info.rank] if self.info.rank < len(state["rng"]) else state["rng"][0]
        ckpt.set_rng_state(rng)

    # ------------------------------------------------------------------ inputs

    def _prepare(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        from spade_bench.data import semantic_input

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
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return generator(segmap, z), mu, logvar

    # ------------------------------------------------------------------ steps

    def generator_step(self, segmap: torch.Tensor, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """One generator (and encoder) update: GAN + feature matching + perceptual (+ KL)."""
        from spade_bench.discriminators import discriminate

        self.optim_G.zero_grad(set_to_none=True)
        # D's own weights get no gradient here: running the unwrapped D keeps DDP from
        # synchronising gradients that the D step would discard anyway.
        disc = unwrap(self.discriminator).requires_grad_(False)
        with autocast(self.device, self.use_amp):
            fake, mu, logvar = self._generate(segmap, image)
            pred_fake, pred_real = discriminate(disc, segmap, fake, image)
        losses: dict[str, torch.Tensor] = {}
        for name, (module, weight) in self.generator_losses.items():
            if name == "gan":
                value = module(pred_fake, True, for_discriminator=False)
            elif name == "feat":
                value = module(pred_fake, pred_real)
            elif name == "perceptual":
                with autocast(self.device, self.use_amp):
                    value = module(fake, image)
            elif name == "kld":
                value = module(mu, logvar)
            else:
                raise TrainingError(f"unknown generator loss {name!r}")
            losses[name] = value.float() * weight
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
        from spade_bench.discriminators import discriminate

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

    def _set_lr(self) -> None:
        tc = self.cfg.train
        start = tc.steps - tc.decay_steps
        factor = 1.0 if self.step < start or tc.decay_steps == 0 else max(0.0, (tc.steps - self.step) / tc.decay_steps)
        for group in self.optim_G.param_groups:
            group["lr"] = self.cfg.optim.lr_G * factor
        for group in self.optim_D.param_groups:
            group["lr"] = self.cfg.optim.lr_D * factor

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
            import torch.distributed as dist
            gathered: list[Any] = [None] * self.info.world_size
            dist.all_gather_object(gathered, rng)
            rng_all = gathered
        else:
            rng_all = [rng]
        return {
            "step": self.step,
            "generator": unwrap(self.generator).state_dict(),
            "discriminator": unwrap(self.discriminator).state_dict(),
            "encoder": unwrap(self.encoder).state_dict() if self.encoder is not None else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optim_G": self.optim_G.state_dict(),
            "optim_D": self.optim_D.state_dict(),
            "data_position": tuple(self.data_position),
            "wall_time_s": self._prior_wall_time + time.time() - self._start_time,
            "rng": rng_all,
            "config": to_dict(self.cfg),
            "config_hash": config_hash(self.cfg),
        }

    def _weights_finite(self) -> bool:
        nets = [self.generator, self.discriminator] + ([self.encoder] if self.encoder is not None else [])
        return all(torch.isfinite(p).all() for n in nets for p in n.parameters())

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
        from torchvision.utils import save_image

        from spade_bench.data import colorize, dataset_palette, semantic_input

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
        colours = colorize(label, self.cfg.data.label_nc + int(self.cfg.data.contain_dontcare),
                           palette=dataset_palette(self.cfg.data)).float().to(self.device) / 255.0
        rows = torch.cat([colours, (fake.float() + 1) / 2, (real + 1) / 2], dim=3).clamp(0, 1)
        path = self.run_dir / "samples" / f"step_{self.step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(rows, path, nrow=1, padding=2)

    # ------------------------------------------------------------------ loop

    def fit(self) -> TrainResult:
        """Train to `train.steps`, checkpointing, logging and sampling along the way."""
        from tqdm import tqdm

        tc = self.cfg.train
        start_time = self._start_time = time.time()
        if self.info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.run_dir / "config.json")
            atomic_write_json(self.run_dir / "env.json", environment_record(self.device, self.info))
            self._write_summary("running", start_time)
        logger = _LossLogger(self.run_dir / "logs", enabled=self.info.is_main, resume_step=self.step)

        workers = self.cfg.data.num_workers
        # Its own generator: creating the iterator must not draw from the global RNG, or a
        # resumed run would diverge from a straight one.
        loader = DataLoader(SeededSamples(self.train_set), batch_sampler=self.sampler, num_workers=workers,
                            pin_memory=self.on_cuda, persistent_workers=workers > 0,
                            prefetch_factor=4 if workers > 0 else None,
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
        stop = StopSignals()
        saved_step = None
        try:
            stop.__enter__()
            data_iter = iter(loader)
            while self.step < tc.steps:
                batch = next(data_iter)
                epoch, index = self.data_position[0], self.data_position[1] + 1
                self.data_position = [epoch + 1, 0] if index >= self.sampler.batches_per_epoch else [epoch, index]
                segmap, image = self._prepare(batch)
                self._set_lr()
                losses: dict[str, torch.Tensor] = {}
                if self.step % tc.d_steps_per_g == 0:
                    losses.update(self.generator_step(segmap, image))
                losses.update(self.discriminator_step(segmap, image))
                self._track_finite(losses)
                for k, v in losses.items():
                    sums[k] = sums[k] + v if k in sums else v.clone()
                    counts[k] = counts.get(k, 0) + 1
                interval_images += self.local_batch * self.info.world_size
                self.step += 1
                bar.update(1)

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
                              "lr_G": self.optim_G.param_groups[0]["lr"],
                              "lr_D": self.optim_D.param_groups[0]["lr"], "images_per_s": rate}
                    logger.write(record)
                    bar.set_postfix({"G": f"{means.get('G/total', float('nan')):.3f}",
                                     "D": f"{means['D/total']:.3f}", "img/s": f"{rate:.1f}"}, refresh=False)
                    sums, counts, interval_start, interval_images = {}, {}, time.time(), 0
                    for hook in self.hooks:
                        hook("log", self)
                if self.info.is_main and (self.step % tc.sample_every == 0 or self.step == tc.steps):
                    self._sample_grid()
                if self.step % tc.checkpoint_every == 0 or self.step == tc.steps:
                    self.save()
                    saved_step = self.step
                if self.step < tc.steps and self._stop_requested(stop):
                    path = self.save() if saved_step != self.step else ckpt.step_path(self.run_dir, self.step)
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
            stop.__exit__()
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
        """True when a stop signal arrived; under DDP, when it arrived at any rank (one
        scalar all-reduce per step), so every rank stops after the same step."""
        flag = 1.0 if stop.received else 0.0
        if self.info.is_distributed:
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
            "config_hash": config_hash(self.cfg),
        }
        if error:
            summary["error"] = error
        atomic_write_json(self.run_dir / "train_summary.json", summary)


class _LossLogger:
    """losses.jsonl + losses.csv + TensorBoard, rank 0 only; a resumed run appends after its step."""

    def __init__(self, folder: Path, *, enabled: bool, resume_step: int):
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
            self.jsonl_path.write_text("".join(ln + "\n" for ln in kept))
        elif self.jsonl_path.exists():
            self.jsonl_path.unlink()
        self.jsonl = open(self.jsonl_path, "a")
        from torch.utils.tensorboard import SummaryWriter
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


def train_run(cfg: RunConfig, run_dir: str | Path, *, resume: bool = False, progress: bool = True,
              hooks: Optional[list] = None) -> TrainResult:
    """Library entry for `spade-bench train`: set up (DDP when under torchrun), train, clean up."""
    from spade_bench.distributed import cleanup, init_distributed

    info, device = init_distributed(cfg.train.device)
    try:
        trainer = Trainer(cfg, run_dir, resume=resume, info=info, device=device, hooks=hooks, progress=progress)
        if trainer.step >= cfg.train.steps:
            return TrainResult(Path(run_dir), trainer.step, float("nan"), 0.0, 0.0, "finished")
        return trainer.fit()
    finally:
        cleanup()


def load_saved_config(run_dir: str | Path) -> RunConfig:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{run_dir} has no config.json")
    return load_config_file(path)
