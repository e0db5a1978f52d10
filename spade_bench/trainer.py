"""The run lifecycle: train one run folder with the GAN step engine.

The Trainer checks the run folder, resumes from a checkpoint, runs the loop and writes what a
run leaves behind (config.json, env.json, checkpoints, loss logs, sample grids,
train_summary.json; layout in spade_bench/run_folder.py). The steps themselves are the
engine's (spade_bench/engine.py). The same code runs on a CPU, one GPU, or many GPUs and
nodes under torchrun (DDP).

Collaborators: `GANEngine` (networks, losses, optimisers, steps, EMA), `TrainBatches`
(resumable data order), `spade_bench.checkpoint` (files, checksums, which checkpoint to
resume), `LossMeter` / `LossLogger` (interval means; JSONL, CSV, TensorBoard) and
`StopSignals` (graceful stop).
"""
from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist
from torchvision.utils import save_image
from tqdm import tqdm

from spade_bench import checkpoint as ckpt
from spade_bench.config import RunConfig, config_hash, experiment_diff, save_config
from spade_bench.data import build_dataset, colorize_labels, semantic_input
from spade_bench.data.loader import size_note
from spade_bench.data.order import TrainBatches
from spade_bench.distributed import DistInfo, all_reduce_max, cleanup, init_distributed, resolve_threads, torch_threads
from spade_bench.engine import GANEngine, checkpoint_nbytes
from spade_bench.environment import current_rss_gib, environment_record, hardware_name, peak_memory_gib
from spade_bench.errors import CheckpointError, ConfigError, TrainingError, TrainingInterrupted
from spade_bench.io import check_output_folder
from spade_bench.locks import folder_lock
from spade_bench.loss_log import LossLogger, LossMeter
from spade_bench.run_folder import RunFolder, read_json, write_json
from spade_bench.signals import StopSignals, stop_requested


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    images_per_s: float
    peak_memory_gib: float
    wall_time_s: float
    status: str
    already_finished: bool = False


class Trainer:
    """Train one run directory with a `GANEngine` (`self.engine`): set-up, resume, loop, records.

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
        with_data: build the datasets and check the run dir (off to build the networks only).
    """

    def __init__(self, cfg: RunConfig, run_dir: str | Path, *, resume: bool = False,
                 resume_from: Optional[int] = None, require_checkpoint: bool = False,
                 info: DistInfo = DistInfo(), device: Optional[torch.device] = None,
                 hooks: Optional[list[Callable[[str, "Trainer"], None]]] = None, progress: bool = True,
                 with_data: bool = True):
        self.cfg, self.run_dir, self.info = cfg, Path(run_dir), info
        self.folder = RunFolder(self.run_dir)
        self.device = device or torch.device("cpu")
        self.hooks = list(hooks or [])
        self.progress = progress and info.is_main
        tc = cfg.train
        if tc.batch_size % info.world_size:
            raise ConfigError(f"train.batch_size {tc.batch_size} is not divisible by the "
                              f"{info.world_size} processes; it is the global batch")
        self.local_batch = tc.batch_size // info.world_size
        # The learning curve's checkpoints (eval.curve_points): written and never pruned.
        self.curve_steps = frozenset(ckpt.curve_steps(tc.steps, cfg.eval.curve_points))
        resume = resume or resume_from is not None
        # fit() trains with this many threads and restores the caller's count after, so a run
        # never leaves its thread count to whatever the process does next.
        self.threads = 1 if tc.deterministic else resolve_threads(tc.threads, info)
        if with_data:
            self._check_run_dir(resume)
        self.engine = GANEngine(cfg, info=info, device=self.device)
        self.batches: Optional[TrainBatches] = None
        if with_data:
            if info.is_main:
                check_output_folder(self.run_dir, checkpoint_nbytes(self.engine.nets), what="run folder")
            self.train_set = build_dataset(cfg.data, "train")
            self.batches = TrainBatches(self.train_set, self.local_batch, tc.seed, info,
                                        num_workers=cfg.data.num_workers, pin_memory=self.engine.on_cuda)
            self.val_set = build_dataset(cfg.data, "val")
            note = size_note(self.train_set, cfg.data)
            if note and info.is_main:
                warnings.warn(note, stacklevel=2)

        self.step = 0
        self._prior_wall_time = 0.0
        self._start_time = time.time()  # fit() resets it
        self._error: Optional[str] = None
        self._log_record: Optional[dict[str, float]] = None
        self._rss_peak = 0.0
        self.images_per_s = float("nan")
        if with_data and resume:
            if ckpt.has_checkpoint(self.run_dir) or resume_from is not None:
                self._resume(resume_from)
            elif require_checkpoint:
                raise CheckpointError(
                    f"--resume: {self.run_dir} has no checkpoint to resume from; train it without --resume "
                    f"(or pass the --out of an earlier run)")

    # ------------------------------------------------------------------ loop

    def fit(self) -> TrainResult:
        """Train to `train.steps`, checkpointing, logging and sampling along the way, on
        `self.threads` intra-op threads (train.threads), restoring the caller's count after.

        On SIGINT, SIGTERM or SIGUSR1 it finishes the step, saves and raises TrainingInterrupted.
        """
        if self.batches is None:
            raise TrainingError(f"this Trainer of {self.run_dir} was built with with_data=False (networks "
                                f"only) and has no data to train on; build it with with_data=True")
        with torch_threads(self.threads):
            return self._fit()

    def _fit(self) -> TrainResult:
        tc, engine = self.cfg.train, self.engine
        start = self._start_time = time.time()
        if self.info.is_main:
            self._write_run_records(start)
        logger = LossLogger(self.folder, enabled=self.info.is_main, resume_step=self.step,
                            resume_record=self._log_record)
        bar = tqdm(total=tc.steps, initial=self.step, disable=not self.progress, unit="step",
                   dynamic_ncols=True, desc=f"train {self.cfg.variant}")
        meter = LossMeter()
        self._start_peak_memory()
        status, saved_step, stop = "failed", None, StopSignals()
        try:
            with stop:
                batches = iter(self.batches)
                while self.step < tc.steps:
                    segmap, image = engine.prepare(next(batches))
                    lrs = engine.learning_rates()
                    losses: dict[str, torch.Tensor] = {}
                    if self.step % tc.d_steps_per_g == 0:
                        losses.update(engine.generator_step(segmap, image))
                        engine.update_ema()
                    losses.update(engine.discriminator_step(segmap, image))
                    engine.step_schedules()
                    engine.track_finite(losses, self.step)
                    meter.add(losses, images=self.local_batch * self.info.world_size)
                    self.step += 1
                    bar.update(1)

                    # The checkpoint comes before anything optional (log, grid), so none of them can lose it.
                    record = self._interval_record(meter, lrs, start) if self._due(tc.log_every) else None
                    self._log_record = record  # saved with the checkpoint: a kill right after it keeps it
                    if self._due(tc.checkpoint_every) or self.step in self.curve_steps:
                        self.save()
                        saved_step = self.step
                    if record is not None:
                        self._log(record, logger, bar)
                    if self.info.is_main and self._due(tc.sample_every):
                        self._sample_grid()
                    if self.step < tc.steps and stop_requested(stop, self.step, self.info, self.device):
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
            self.images_per_s = meter.steady_rate()
            peak = all_reduce_max(self._peak_memory(), self.device)
            if self.info.is_main:
                self._write_summary(status, start, peak, self._error)
        return TrainResult(self.run_dir, self.step, self.images_per_s, peak, time.time() - start, status)

    def _due(self, every: int) -> bool:
        """Whether the step just done is one of every `every` steps, or the last."""
        return self.step % every == 0 or self.step == self.cfg.train.steps

    # ------------------------------------------------------------------ set-up and resume

    def _check_run_dir(self, resume: bool) -> None:
        saved = self.folder.config
        has_ckpt = ckpt.has_checkpoint(self.run_dir)
        if has_ckpt and not resume:
            raise CheckpointError(
                f"{self.run_dir} already holds checkpoints; pass --resume to continue it, "
                f"or choose another --out (nothing was overwritten)")
        if resume and saved.is_file() and has_ckpt:
            old = read_json(saved)
            if experiment_diff(old, self.cfg):
                raise CheckpointError(
                    f"refusing to resume {self.run_dir}: {ckpt.config_mismatch_message(old, self.cfg, str(saved))}. "
                    f"Resume it with its saved config (spade-bench train --out {self.run_dir} --resume, with no "
                    f"other options), or start a new run with another --out")

    def _resume(self, resume_from: Optional[int]) -> None:
        path, state, skipped = ckpt.find_resume_checkpoint(self.run_dir, resume_from)
        for problem in skipped:
            kind = "refused" if " refused: " in problem else "corrupt"   # our own message, not the file's
            warnings.warn(f"skipped a {kind} checkpoint: {problem}; resuming from {path}", stacklevel=2)
        if experiment_diff(state.get("config", {}), self.cfg):  # values, not hashes of older rules
            raise CheckpointError(
                f"refusing to resume from {path}: {ckpt.config_mismatch_message(state.get('config', {}), self.cfg, 'the checkpoint')}. "
                f"Resume with the run's own config (spade-bench train --out {self.run_dir} --resume, with no "
                f"other options), or start a new run with another --out")
        self.step = int(state["step"])
        self.engine.load_state_dict(state, self.step)
        self.batches.resume_at(state["data_position"])
        self._prior_wall_time = float(state.get("wall_time_s", 0.0))
        self._log_record = state.get("log_record")
        rng = state["rng"][self.info.rank] if self.info.rank < len(state["rng"]) else state["rng"][0]
        ckpt.set_rng_state(rng)
        newer = [(s, p) for s, p in ckpt.list_step_checkpoints(self.run_dir) if s > self.step]
        if newer and self.info.is_main:
            aside = self.folder.checkpoints / f"superseded-{self.step}"
            aside.mkdir(exist_ok=True)
            for _, p in newer:
                os.replace(p, aside / p.name)
            ckpt.point_latest(path if path.name != ckpt.LATEST else ckpt.step_path(self.run_dir, self.step))
            warnings.warn(f"resuming from step {self.step}: the newer checkpoints "
                          f"({', '.join(str(s) for s, _ in newer)}) were moved to {aside}", stacklevel=2)

    # ------------------------------------------------------------------ checkpoints

    def save(self) -> Optional[Path]:
        """Write a checkpoint (rank 0), never one with non-finite weights."""
        self._raise_if_nonfinite()
        if (bad := self.engine.nonfinite_weights()) is not None:
            latest = ckpt.latest_path(self.run_dir)
            kept = f"the last good one is {latest.resolve()}" if latest.is_file() else "no checkpoint had been written"
            raise TrainingError(f"non-finite weights at step {self.step} ({bad} holds NaN or infinity); not writing "
                                f"a checkpoint ({kept}). Check the settings that scale updates (optim.lr, "
                                f"train.ema_decay, the loss weights)")
        state = ckpt.training_state(
            self.cfg, self.step, self.engine.state_dict(), rng=self._rng_states(),
            data_position=self.batches.position if self.batches is not None else (0, 0),
            wall_time_s=self._prior_wall_time + time.time() - self._start_time, log_record=self._log_record)
        path = None
        if self.info.is_main:
            path = ckpt.save_checkpoint(self.run_dir, self.step, state, self.cfg.train.keep_checkpoints,
                                        protect=self.curve_steps)
        for hook in self.hooks:
            hook("checkpoint", self)
        return path

    def _rng_states(self) -> list[dict[str, Any]]:
        """Every rank's RNG states, rank order (a collective under DDP: every rank takes part)."""
        rng = ckpt.rng_state()
        if not self.info.is_distributed:
            return [rng]
        gathered: list[Any] = [None] * self.info.world_size
        dist.all_gather_object(gathered, rng)
        return gathered

    def _raise_if_nonfinite(self) -> None:
        bad = self.engine.first_nonfinite()
        if bad is None:
            return
        step, name = bad
        latest = ckpt.latest_path(self.run_dir)
        kept = f"the last good checkpoint is {latest}" if latest.is_file() else "no checkpoint had been written"
        raise TrainingError(
            f"non-finite loss {name} at step {step}; training stopped and {kept}. "
            f"Try a lower optim.lr, loss.gan_mode=hinge, or train.amp=false")

    # ------------------------------------------------------------------ logs, samples, records

    def _interval_record(self, meter: LossMeter, lrs: tuple[float, float], start: float) -> dict[str, Any]:
        self._raise_if_nonfinite()
        self.engine.synchronize()
        self._rss_peak = max(self._rss_peak, current_rss_gib())
        return meter.record(self.step, lrs, start)

    def _log(self, record: dict[str, Any], logger: LossLogger, bar: tqdm) -> None:
        logger.write(record)
        bar.set_postfix({"G": f"{record.get('G/total', float('nan')):.3f}",
                         "D": f"{record['D/total']:.3f}", "img/s": f"{record['images_per_s']:.1f}"},
                        refresh=False)
        for hook in self.hooks:
            hook("log", self)

    @torch.no_grad()
    def _sample_grid(self) -> None:
        """Label colours | generated | real for a fixed validation batch (no training side effects)."""
        n = min(4, len(self.val_set))
        items = [self.val_set[i] for i in range(n)]
        label = torch.stack([it["label"] for it in items]).to(self.device)
        inst = torch.stack([it["instance"] for it in items]).to(self.device) if "instance" in items[0] else None
        real = torch.stack([it["image"] for it in items]).to(self.device)
        segmap = semantic_input(label, inst, self.cfg.data)
        gen, enc = self.engine.sampling_networks()
        was_training = gen.training
        gen.eval()
        if enc is not None:
            enc.eval()
        with torch.random.fork_rng(devices=[self.device] if self.engine.on_cuda else []):
            torch.manual_seed(0)
            fake, _, _ = self.engine.generate(segmap, real, gen, enc)
        gen.train(was_training)
        if enc is not None:
            enc.train()
        colours = colorize_labels(label, self.cfg.data).float().to(self.device) / 255.0
        rows = torch.cat([colours, (fake.float() + 1) / 2, (real + 1) / 2], dim=3).clamp(0, 1)
        path = self.folder.sample_grid(self.step)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(rows, path, nrow=1, padding=2)

    def _start_peak_memory(self) -> None:
        self._rss_peak = current_rss_gib()
        if self.engine.on_cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def _peak_memory(self) -> float:
        if self.engine.on_cuda:
            return peak_memory_gib(self.device)
        return max(self._rss_peak, current_rss_gib())

    def _write_run_records(self, start: float) -> None:
        """config.json, env.json and a "running" train_summary.json, before the first step."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, self.folder.config)
        write_json(self.folder.env, environment_record(self.device, self.info, numerics_mode=self.engine.numerics_mode,
                                                       amp=self.engine.use_amp))
        self._write_summary("running", start)

    def _write_summary(self, status: str, start_time: float, peak: Optional[float] = None,
                       error: Optional[str] = None) -> None:
        summary = {
            "status": status, "step": self.step, "steps": self.cfg.train.steps,
            "images_per_s": None if math.isnan(self.images_per_s) else self.images_per_s,
            "peak_memory_gib": peak,
            "peak_memory_kind": ("cuda max_memory_allocated" if self.engine.on_cuda
                                 else "max resident set size sampled at log steps"),
            "wall_time_s": self._prior_wall_time + time.time() - start_time,
            "device": str(self.device), "hardware": hardware_name(self.device),
            "world_size": self.info.world_size, "amp_bf16": self.engine.use_amp, "ema": self.cfg.train.ema,
            "config_hash": config_hash(self.cfg), "threads": torch.get_num_threads(),
        }
        if error:
            summary["error"] = error
        write_json(self.folder.summary, summary)


def train_run(cfg: RunConfig, run_dir: str | Path, *, resume: bool = False, resume_from: Optional[int] = None,
              require_checkpoint: bool = False, progress: bool = True, hooks: Optional[list] = None,
              break_lock: bool = False) -> TrainResult:
    """Library entry for `spade-bench train`: set up (DDP when under torchrun), train, clean up.

    Rank 0 holds the run folder's lock (RUN/.lock, `spade_bench.locks`) from before the folder
    is checked until the run ends: a second trainer on the same folder is refused, naming the
    first; `break_lock` clears a stale lock (its process is dead). A run that already reached
    train.steps returns at once (already_finished=True) with the figures of its
    train_summary.json.
    """
    info, device = init_distributed(cfg.train.device)
    folder = RunFolder(run_dir)
    try:
        with folder_lock(folder.lock, "run folder", break_lock=break_lock, enabled=info.is_main):
            trainer = Trainer(cfg, run_dir, resume=resume, resume_from=resume_from,
                              require_checkpoint=require_checkpoint, info=info, device=device, hooks=hooks,
                              progress=progress)
            if trainer.step >= cfg.train.steps:
                summary = read_json(trainer.folder.summary, missing_ok=True)
                rate = summary.get("images_per_s")
                return TrainResult(Path(run_dir), trainer.step, float("nan") if rate is None else float(rate),
                                   float(summary.get("peak_memory_gib") or 0.0), 0.0, "finished",
                                   already_finished=True)
            return trainer.fit()
    finally:
        cleanup()


def load_saved_config(run_dir: str | Path) -> RunConfig:
    """The config a run was trained with: RUN/config.json, or the one stored in its newest
    readable checkpoint when config.json is gone (with a warning)."""
    cfg, source = ckpt.saved_run_config(run_dir)
    config_path = RunFolder(run_dir).config
    if source != config_path:
        warnings.warn(f"{config_path} is missing; using the config stored in {source} "
                      f"(training writes it again)", stacklevel=2)
    return cfg
