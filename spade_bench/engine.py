"""The GAN step engine: networks, optimisers, losses, a generator step, a discriminator step, EMA.

It knows nothing of run folders, checkpoint files, signals or logs: the Trainer
(spade_bench/trainer.py) drives it through a run, `spade-bench bench` times its steps on
random tensors, and `import-nvlabs` loads released weights into its networks.

Variants never subclass it. They change the RunConfig; the engine builds networks, losses
({name: (module, weight)}) and optimisers from it. One training iteration (as in the
original) is a generator step and the EMA update every `train.d_steps_per_g` iterations,
then a discriminator step, on the same batch.

Each step is a sequence of named phases (`PHASES`). `engine.phase(name)` wraps each of them;
it is a no-op context by default, and a profiler replaces it to time the phases.
"""
from __future__ import annotations

import contextlib
import copy
import os
import random
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Optional

import numpy as np
import torch
import torch.nn as nn

from spade_bench import checkpoint as ckpt
from spade_bench.config import RunConfig, TrainConfig
from spade_bench.data import semantic_input
from spade_bench.discriminators import build_discriminator, discriminate
from spade_bench.distributed import DistInfo, launched_by_torchrun, prepare_batchnorm, unwrap, wrap_for_training
from spade_bench.encoders import build_encoder, reparameterize
from spade_bench.errors import CheckpointError
from spade_bench.generators import build_generator
from spade_bench.losses import GANLoss, build_generator_losses, generator_loss_values
from spade_bench.numerics import apply_mode

# The phases of one iteration, in the order they run (EMA only with train.ema).
PHASES = ("G/generate", "G/discriminate", "G/losses", "G/backward", "G/optimizer", "EMA",
          "D/generate", "D/discriminate", "D/losses", "D/backward", "D/optimizer")

_UNTIMED = contextlib.nullcontext()


def untimed(name: str) -> ContextManager:
    """The default `GANEngine.phase`: runs the phase as it is."""
    return _UNTIMED


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast with fp32 master weights; a no-op context when disabled."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def configure_numerics(tc: TrainConfig, device: torch.device) -> str:
    """Process-wide numerics: the pinned CPU kernels (train.numerics=pinned, checked in force:
    spade_bench/numerics.py), deterministic algorithms (train.deterministic), else cuDNN
    autotuning (train.cudnn_benchmark) and TF32 matmuls on CUDA, as the original trains.
    Returns the numerics mode in force ("pinned" or "native")."""
    mode = apply_mode(tc.numerics, tc.threads)
    if tc.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        return mode
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = tc.cudnn_benchmark
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return mode


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
    # Without fused: the multi-tensor update (optim.foreach), bit-identical to the per-tensor
    # loop that torch picks for CPU tensors, with far fewer small ops.
    foreach = None if fused else bool(cfg.optim.foreach)
    optim_G = torch.optim.Adam(g_params, lr=cfg.optim.lr_G, betas=cfg.optim.betas, fused=fused, foreach=foreach)
    optim_D = torch.optim.Adam(discriminator.parameters(), lr=cfg.optim.lr_D, betas=cfg.optim.betas, fused=fused,
                               foreach=foreach)

    def factor(step: int) -> float:
        return lr_factor(step, tc.steps, tc.decay_steps)

    return Networks(generator, discriminator, encoder, ema, optim_G, optim_D,
                    torch.optim.lr_scheduler.LambdaLR(optim_G, factor),
                    torch.optim.lr_scheduler.LambdaLR(optim_D, factor))


def checkpoint_nbytes(nets: Networks) -> int:
    """About the size of one checkpoint: weights, two Adam moments per weight, the EMA copy."""
    weights = sum(ckpt.state_nbytes(m.state_dict()) for m in nets.trained())
    return 3 * weights + (ckpt.state_nbytes(nets.ema.state_dict()) if nets.ema is not None else 0)


# ----------------------------------------------------------------------------- engine

class GANEngine:
    """Networks, losses and optimisers of one run config, and the steps that train them.

    Construction sets the process's numerics (`configure_numerics`), builds the networks
    (seeded with train.seed on every rank), then seeds the process's torch, NumPy and Python
    RNGs with train.seed + rank (the stream the steps draw from) before it builds the losses,
    and wraps the trained modules for DDP / torch.compile.

    Args:
        cfg: the resolved run config.
        info: rank and world size (`spade_bench.distributed.init_distributed`); one process by default.
        device: where the networks live; the CPU by default.

    Attributes:
        generator_losses: {name: (module, weight)}; an ablation drops or reweights a term in config.
        use_amp, channels_last: the fast-path switches in effect on this device.
        numerics_mode: "pinned" or "native", as in force (`configure_numerics`).
        phase: `phase(name) -> context manager` around each of `PHASES` (no-op by default).
    """

    def __init__(self, cfg: RunConfig, *, info: DistInfo = DistInfo(), device: Optional[torch.device] = None):
        self.cfg, self.info = cfg, info
        self.device = device or torch.device("cpu")
        tc = cfg.train
        self.on_cuda = self.device.type == "cuda"
        self.use_amp = tc.amp and (self.on_cuda or tc.amp_cpu)
        on_cpu = self.device.type == "cpu"
        # Not under torchrun: CPU DDP (gloo) is a correctness path, checked against one process
        # (tests/spade_bench/test_trainer.py), and NHWC moves the two further apart (after 3 smoke
        # steps 88% of G's weights agree within 1e-6 instead of 97%).
        self.channels_last = ((tc.channels_last and self.on_cuda)
                              or (tc.channels_last_cpu and on_cpu and not launched_by_torchrun()))
        self.numerics_mode = configure_numerics(tc, self.device)
        # On a CPU only the inputs (and so every activation) go NHWC; the weights keep their
        # layout, which gives the same bits and keeps checkpoints and spectral norm as they are.
        self.nets = build_networks(cfg, info, self.device, self.channels_last and self.on_cuda)
        torch.manual_seed(tc.seed + info.rank)
        np.random.seed((tc.seed + info.rank) % 2 ** 32)
        random.seed(tc.seed + info.rank)
        self.generator_losses = {name: (module.to(self.device), weight)
                                 for name, (module, weight) in build_generator_losses(cfg).items()}
        if self.channels_last and on_cpu:
            for module, _ in self.generator_losses.values():
                if hasattr(module, "cpu_fast_path"):
                    module.cpu_fast_path()
        self.gan_loss = GANLoss(cfg.loss.gan_mode).to(self.device)
        wrap_for_training(self.nets, info, self.device, compile=tc.compile)
        self.phase: Callable[[str], ContextManager] = untimed
        self._bad_record = torch.full((), -1, dtype=torch.long, device=self.device)
        self._loss_names: list[str] = []

    # The trained modules and their optimisers.
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

    # ------------------------------------------------------------------ inputs

    def prepare(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """A data-loader batch -> (semantic input, image) on the device, in the training layout."""
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

    def generate(self, segmap: torch.Tensor, image: torch.Tensor, generator: Optional[nn.Module] = None,
                 encoder: Optional[nn.Module] = None):
        """(fake, mu, logvar): with an encoder, z from the posterior of `image`; mu and logvar
        are None without one. The trained generator and encoder unless others are given."""
        generator = self.generator if generator is None else generator
        encoder = self.encoder if encoder is None else encoder
        mu = logvar = z = None
        if encoder is not None:
            mu, logvar = encoder(image)
            z = reparameterize(mu, logvar)
        return generator(segmap, z), mu, logvar

    def sampling_networks(self) -> tuple[nn.Module, Optional[nn.Module]]:
        """(generator, encoder) to render samples with: the EMA generator when train.ema."""
        generator = self.ema if self.ema is not None else unwrap(self.generator)
        return generator, unwrap(self.encoder) if self.encoder is not None else None

    def learning_rates(self) -> tuple[float, float]:
        """(lr_G, lr_D) the next step trains with."""
        return self.optim_G.param_groups[0]["lr"], self.optim_D.param_groups[0]["lr"]

    # ------------------------------------------------------------------ steps

    def generator_step(self, segmap: torch.Tensor, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """One generator (and encoder) update: GAN + feature matching + perceptual (+ KL)."""
        self.optim_G.zero_grad(set_to_none=True)
        # D's own weights get no gradient here: running the unwrapped D keeps DDP from
        # synchronising gradients that the D step would discard anyway.
        disc = unwrap(self.discriminator).requires_grad_(False)
        with autocast(self.device, self.use_amp):
            with self.phase("G/generate"):
                fake, mu, logvar = self.generate(segmap, image)
            with self.phase("G/discriminate"):
                pred_fake, pred_real = discriminate(disc, segmap, fake, image)
            with self.phase("G/losses"):
                losses = generator_loss_values(self.generator_losses, pred_fake=pred_fake, pred_real=pred_real,
                                               fake=fake, real=image, mu=mu, logvar=logvar)
        total = sum(losses.values())
        with self.phase("G/backward"):
            total.backward()
        with self.phase("G/optimizer"):
            self.optim_G.step()
        disc.requires_grad_(True)
        out = {f"G/{k}": v.detach() for k, v in losses.items()}
        out["G/total"] = total.detach()
        return out

    @torch.no_grad()
    def update_ema(self) -> None:
        """Move the EMA generator towards the trained one (train.ema_decay); buffers are copied.
        Nothing without train.ema."""
        if self.ema is None:
            return
        with self.phase("EMA"):
            decay = self.cfg.train.ema_decay
            src = unwrap(self.generator)
            for e, p in zip(self.ema.parameters(), src.parameters()):
                e.lerp_(p.detach(), 1 - decay)
            for e, b in zip(self.ema.buffers(), src.buffers()):
                e.copy_(b)

    def discriminator_step(self, segmap: torch.Tensor, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """One discriminator update on detached fakes: hinge (or ls/BCE) on fake and real."""
        self.optim_D.zero_grad(set_to_none=True)
        with self.phase("D/generate"), torch.no_grad(), autocast(self.device, self.use_amp):
            fake, _, _ = self.generate(segmap, image)
        fake = fake.detach()
        with self.phase("D/discriminate"), autocast(self.device, self.use_amp):
            pred_fake, pred_real = discriminate(self.discriminator, segmap, fake, image)
        with self.phase("D/losses"):
            loss_fake = self.gan_loss(pred_fake, False, for_discriminator=True).float()
            loss_real = self.gan_loss(pred_real, True, for_discriminator=True).float()
            total = loss_fake + loss_real
        with self.phase("D/backward"):
            total.backward()
        with self.phase("D/optimizer"):
            self.optim_D.step()
        return {"D/fake": loss_fake.detach(), "D/real": loss_real.detach(), "D/total": total.detach()}

    def step_schedules(self) -> None:
        """Advance both learning-rate schedules by one iteration."""
        self.nets.sched_G.step()
        self.nets.sched_D.step()

    def synchronize(self) -> None:
        """Wait for the device's queued work (before reading a clock)."""
        if self.on_cuda:
            torch.cuda.synchronize(self.device)

    # ------------------------------------------------------------------ non-finite values

    def track_finite(self, losses: dict[str, torch.Tensor], step: int) -> None:
        """Remember the first (step, loss) that went non-finite, without a host sync."""
        for name in losses:
            if name not in self._loss_names:
                self._loss_names.append(name)
        zero = torch.zeros((), device=self.device)
        values = torch.stack([losses.get(n, zero).float() for n in self._loss_names])
        bad = ~torch.isfinite(values)
        first = torch.argmax(bad.float())
        code = step * 64 + first
        self._bad_record = torch.where((self._bad_record < 0) & bad.any(), code, self._bad_record)

    def first_nonfinite(self) -> Optional[tuple[int, str]]:
        """(step, counted from 1, and loss name) of the first non-finite loss tracked, or None.
        One host sync."""
        code = int(self._bad_record.item())
        if code < 0:
            return None
        step, index = divmod(code, 64)
        return step + 1, self._loss_names[index] if index < len(self._loss_names) else "?"

    def nonfinite_weights(self) -> Optional[str]:
        """'<network> <tensor>' of the first saved tensor (parameters and buffers: batch-norm
        statistics, spectral norm's vectors) holding NaN or infinity, in every network a
        checkpoint saves, the EMA generator included; None when all are finite."""
        nets = {"generator": self.nets.generator, "discriminator": self.nets.discriminator,
                "encoder": self.nets.encoder, "ema": self.nets.ema}
        for role, net in nets.items():
            if net is None:
                continue
            for name, tensor in unwrap(net).state_dict().items():
                if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                    return f"{role} {name}"
        return None

    def weights_finite(self) -> bool:
        return self.nonfinite_weights() is None

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Weights, EMA, optimiser and schedule states (the networks' part of a checkpoint)."""
        return self.nets.state_dict()

    def load_state_dict(self, state: dict[str, Any], step: int) -> None:
        self.nets.load_state_dict(state, step)
