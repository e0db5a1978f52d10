"""`spade-bench ablate`: train and score variants x seeds, then write the report.

Resumable at every level: a pair whose metrics.json scores its finished checkpoint with
every registered metric at this code's version is skipped; a trained pair that lacks some
metrics (one added since, or whose version was bumped) is scored for those only, keeping
the others; an interrupted pair resumes from its latest checkpoint; the segmentation
evaluator is trained once per dataset and resolution and then reused. A pair that fails
is recorded as failed (RUN/train_summary.json) and shown as failed in the report; the
other pairs still run.

The pieces (`plan_sweep`, `ensure_segmenter`, `run_pair`, `record_failure`,
`build_sweep_report`) are shared by the inline loop here and by the job launchers in
runners/launch.py, so a pair does the same work in this process, in a local subprocess
or in a SLURM job.

On a CPU the inline launcher runs `pair_parallelism` pairs at once (the cores this process
may use // train.threads; the smoke preset: 2 single-threaded pairs on 2 cores), each in a
worker process of its own, after the evaluator is trained once here. Workers are forked when
they compute on one thread (the same code as the loop, monkeypatches included) and spawned
otherwise (an OpenMP thread pool does not survive a fork). A pair's numbers do not depend on
which process trains it.
"""
from __future__ import annotations

import json
import multiprocessing
import traceback
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from tqdm import tqdm

from eval.curve import points_to_score, score_curve
from eval.harness import evaluate_run
from eval.segmenter import run_segmenter_path, train_segmenter
from reports.build import build_report
from spade_bench import checkpoint as ckpt
from spade_bench import trainer as trainer_module
from spade_bench.config import RunConfig, experiment_diff, hash_names_config, resolve, save_config, to_dict
from spade_bench.distributed import available_cores, resolve_device, resolve_threads
from spade_bench.errors import ConfigError, LockError, TrainingInterrupted
from spade_bench.numerics import export_pin
from spade_bench.io import atomic_write_json
from spade_bench.locks import folder_lock
from spade_bench.metrics import ALL, metric_names, unscored
from spade_bench.run_folder import RunFolder, read_json_or_empty

CORE_VARIANTS = ("spade", "spade-gamma", "concat", "pix2pixhd")
SWEEP_LOCK = ".lock"   # OUT/.lock while a sweep runs there (`sweep_lock`)
# OUT/.evaluator-progress: "STEP TOTAL" of the evaluator a worker trains beside the first pairs,
# for the sweep's bar (written every EVALUATOR_PROGRESS_EVERY steps and at the last).
EVALUATOR_PROGRESS = ".evaluator-progress"
EVALUATOR_PROGRESS_EVERY = 25


@dataclass
class PairOutcome:
    variant: str
    seed: int
    run_dir: Path
    status: str  # "done" (already finished), "finished", "failed"
    error: Optional[str] = None


@dataclass
class AblationResult:
    out: Path
    report_dir: Optional[Path]
    pairs: list[PairOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[PairOutcome]:
        return [p for p in self.pairs if p.status == "failed"]


@dataclass
class Sweep:
    """What an ablation will run: one resolved config per (variant, seed), and where."""

    name: str
    preset: str
    out: Path
    report_out: Path
    configs: dict[tuple[str, int], RunConfig]
    segmenter: Path
    segmenter_steps: int
    device: str

    @property
    def pairs(self) -> list[tuple[str, int]]:
        return list(self.configs)

    def run_dir(self, variant: str, seed: int) -> Path:
        return pair_dir(self.out, variant, seed)

    @property
    def run_dirs(self) -> list[Path]:
        return [self.run_dir(v, s) for v, s in self.pairs]

    def todo(self) -> list[tuple[str, int]]:
        """The pairs still to do (not `pair_is_done`), in the sweep's order."""
        return [pair for pair in self.pairs if not pair_is_done(self.run_dir(*pair), self.configs[pair])]


def pair_dir(out: Path, variant: str, seed: int) -> Path:
    return Path(out) / f"{variant}-s{seed}"


def scores_checkpoint(record: dict, cfg: RunConfig, run_dir: Path) -> bool:
    """A metrics.json record scores the pair's finished checkpoint under this experiment: the
    config hash it records is the hash of the run's saved config (RUN/config.json, else `cfg`;
    under the hashing rule of the code that scored it), and that config is `cfg`'s experiment.
    Hashes are never compared across rules, so a run scored by older code stays finished."""
    run = record.get("run")
    if record.get("checkpoint_step") != cfg.train.steps or not isinstance(run, dict):
        return False
    saved = read_json_or_empty(RunFolder(run_dir).config) or to_dict(cfg)
    return hash_names_config(run.get("config_hash"), saved) and not experiment_diff(saved, cfg)


def metrics_to_score(run_dir: Path, cfg: RunConfig) -> dict[str, str]:
    """{metric: why} for the registered metrics the pair's metrics.json lacks or holds at another
    version than this code's; every metric when it does not score the finished checkpoint
    under this config. Empty: the pair is done."""
    # A hand-edited or foreign record must not crash a sweep, its status or its report.
    record = read_json_or_empty(RunFolder(run_dir).metrics)
    if not scores_checkpoint(record, cfg, run_dir):
        return dict.fromkeys(metric_names(), "not scored")
    return unscored(record)


def curve_to_score(run_dir: Path, cfg: RunConfig) -> list[int]:
    """The learning-curve steps (eval.curve_points) the pair has a checkpoint for but no score
    (eval/curve.py); empty without a curve, or before training."""
    if cfg.eval.curve_points <= 0 or not RunFolder(run_dir).config.is_file():
        return []
    return points_to_score(run_dir, cfg.eval.curve_points, cfg.eval.curve_metrics)


def pair_is_done(run_dir: Path, cfg: RunConfig) -> bool:
    """The pair's metrics.json scores its finished checkpoint under this exact config, with every
    registered metric at this code's version, and its learning curve is scored."""
    return not metrics_to_score(run_dir, cfg) and not curve_to_score(run_dir, cfg)


def _trained(run_dir: Path, cfg: RunConfig) -> bool:
    if not ckpt.has_checkpoint(run_dir):
        return False
    record = read_json_or_empty(RunFolder(run_dir).summary)
    return record.get("status") == "finished" and record.get("step") == cfg.train.steps


def mark_failed(run_dir: Path, error: str, cfg: Optional[RunConfig] = None) -> None:
    """Record a failed pair in RUN/train_summary.json (status "failed", the error), keeping
    what the trainer wrote there. With `cfg`, a pair that never started also gets its
    config.json, so the report files it under its variant, seed and dataset."""
    folder = RunFolder(run_dir)
    record = read_json_or_empty(folder.summary)
    record.update(status="failed", error=error)
    atomic_write_json(folder.summary, record)
    if cfg is not None and not folder.config.is_file():
        save_config(cfg, folder.config)


def record_failure(run_dir: Path, cfg: RunConfig, error: BaseException) -> str:
    """Mark the pair failed with the exception and keep its traceback; returns the message."""
    message = f"{type(error).__name__}: {error}"
    run_dir.mkdir(parents=True, exist_ok=True)
    mark_failed(run_dir, message, cfg)
    RunFolder(run_dir).failure_traceback.write_text(
        "".join(traceback.format_exception(type(error), error, error.__traceback__)))
    return message


def plan_sweep(*, dataset: Optional[str] = None, root: Optional[str] = None,
               variants: tuple[str, ...] = CORE_VARIANTS, seeds: tuple[int, ...] = (0,),
               preset: str = "smoke", out: Optional[Path] = None, report_out: Optional[Path] = None,
               overrides: Optional[list[str]] = None, device: str = "auto",
               segmenter_steps: Optional[int] = None) -> Sweep:
    """Resolve every pair's config (a typo in a variant name fails before any training)."""
    if not variants:
        raise ConfigError("no variants given; e.g. --variants spade,spade-gamma,concat,pix2pixhd")
    if not seeds:
        raise ConfigError("no seeds given; e.g. --seeds 0,1,2")
    base_overrides = list(overrides or [])
    if device != "auto":
        base_overrides.append(f"train.device={device}")
    if segmenter_steps is not None:
        # The evaluator's steps are part of the protocol (and of its cache name): every pair's
        # config records them, so a later `spade-bench eval` of a pair finds the same evaluator.
        base_overrides.append(f"eval.segmenter_steps={segmenter_steps}")
    configs = {(v, s): resolve(v, preset=preset, dataset=dataset, root=root,
                               overrides=base_overrides + [f"train.seed={s}"])
               for v in variants for s in seeds}
    first = next(iter(configs.values()))
    name = f"ablate-{first.data.dataset}-{preset}"
    out = Path(out) if out else Path("runs") / name
    report_out = Path(report_out) if report_out else Path("reports") / name
    # One evaluator for all pairs (same dataset, resolution and root).
    seg_path = Path(first.eval.segmenter) if first.eval.segmenter else run_segmenter_path(first)
    return Sweep(name=name, preset=preset, out=out, report_out=report_out, configs=configs,
                 segmenter=seg_path, segmenter_steps=first.eval.segmenter_steps,
                 device=device)


def ensure_segmenter(sweep: Sweep, echo: Callable[[str], None] = print, progress: bool = True,
                     on_step: Optional[Callable[[int], None]] = None) -> Path:
    """Train the sweep's segmentation evaluator unless it is already there."""
    if not sweep.segmenter.is_file():
        echo(f"training the segmentation evaluator -> {sweep.segmenter}")
        first = next(iter(sweep.configs.values()))
        train_segmenter(first, sweep.segmenter, steps=sweep.segmenter_steps, device=sweep.device,
                        progress=progress, on_step=on_step)
    return sweep.segmenter


def _evaluator_progress_path(out: Path) -> Path:
    return Path(out) / EVALUATOR_PROGRESS


def evaluator_progress_writer(sweep: Sweep) -> Callable[[int], None]:
    """on_step for the evaluator trained in a worker: "STEP TOTAL" into OUT/.evaluator-progress."""
    path, total = _evaluator_progress_path(sweep.out), sweep.segmenter_steps

    def write(step: int) -> None:
        if step % EVALUATOR_PROGRESS_EVERY == 0 or step == total:
            path.write_text(f"{step} {total}\n")
    return write


def evaluator_progress(out: Path) -> Optional[tuple[int, int]]:
    """(step, total) of the evaluator being trained for the sweep in `out`; None before its first
    report (or when the file is unreadable: a half-written line is read again a second later)."""
    try:
        step, total = (int(v) for v in _evaluator_progress_path(out).read_text().split())
    except (OSError, ValueError):
        return None
    return step, total


def run_pair(cfg: RunConfig, run_dir: Path, segmenter: Path, device: str = "auto", *,
             hooks: Optional[list] = None, evaluate: bool = True,
             on_warning: Optional[Callable[[str], None]] = None) -> str:
    """Train (resuming) then score one pair; returns "done" when it was already finished,
    else "finished". A trained pair is scored only for the metrics it lacks (the harness keeps
    the others). Errors propagate: the caller records them (`record_failure`)."""
    todo = metrics_to_score(run_dir, cfg)
    if not todo and not curve_to_score(run_dir, cfg):
        return "done"
    if not _trained(run_dir, cfg):
        # Looked up on the module so that tests can stand in a failing trainer.
        trainer_module.train_run(cfg, run_dir, resume=True, progress=False, hooks=hooks)
        todo = metrics_to_score(run_dir, cfg)
    if not evaluate:
        return "finished"
    metric = ALL if set(todo) == set(metric_names()) else ",".join(todo)
    overrides = [f"eval.segmenter={segmenter}"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if todo:
            evaluate_run(run_dir, metric=metric, overrides=overrides, device=device, progress=False)
        if cfg.eval.curve_points > 0:
            # The learning curve's checkpoints: only the points not scored yet (eval/curve.py).
            score_curve(run_dir, cfg.eval.curve_points, metric=cfg.eval.curve_metrics, overrides=overrides,
                        device=device, progress=False)
    if on_warning is not None:
        for w in caught:
            on_warning(str(w.message))
    return "finished"


def pair_parallelism(sweep: Sweep, max_parallel: Optional[int] = None) -> int:
    """How many pairs the inline launcher runs at once: on a CPU the cores this process may use
    // the pairs' thread count (train.threads; 0 takes all cores, so 1 pair), capped by
    `max_parallel`; 1 on a GPU."""
    configs = list(sweep.configs.values())
    if not configs or any(resolve_device(cfg.train.device).type != "cpu" for cfg in configs):
        return 1
    threads = max(resolve_threads(cfg.train.threads) for cfg in configs)
    fit = max(1, available_cores() // threads)
    return max(1, min(fit, max_parallel or fit))


def logged_step(run_dir: Path) -> Optional[int]:
    """The last step in logs/losses.jsonl (written every train.log_every steps)."""
    path = RunFolder(run_dir).losses
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        return int(json.loads(lines[-1])["step"]) if lines else None
    except (OSError, ValueError, KeyError, IndexError):
        return None


def _pair_job(cfg: RunConfig, run_dir: Path, segmenter: Path, device: str, evaluate: bool = True) -> dict:
    """One pair in a worker process: {"status", "error", "warnings", "stop"}. A failure is recorded
    here, as the inline loop records it; a graceful stop (Ctrl-C reaches every worker) comes back
    as "interrupted" with the stop's (signal, step, checkpoint). `evaluate=False` trains only."""
    seen: list[str] = []
    try:
        status = run_pair(cfg, run_dir, segmenter, device, evaluate=evaluate, on_warning=seen.append)
        return {"status": status, "warnings": seen}
    except TrainingInterrupted as e:
        return {"status": "interrupted", "error": str(e), "warnings": seen,
                "stop": (e.signal_name, e.step, str(e.checkpoint))}
    except LockError as e:   # another process trains or scores this pair: not its failure
        return {"status": "failed", "error": f"skipped: {e}", "warnings": seen}
    except Exception as e:  # noqa: BLE001 - one pair's crash must not end the ablation
        return {"status": "failed", "error": record_failure(run_dir, cfg, e), "warnings": seen}


def _segmenter_job(sweep: Sweep) -> str:
    """The sweep's evaluator, trained in a worker beside the first pairs; its errors propagate."""
    return str(ensure_segmenter(sweep, echo=lambda text: None, progress=False,
                                on_step=evaluator_progress_writer(sweep)))


def _run_pairs_in_processes(sweep: Sweep, parallel: int, bar, warn_once) -> dict[tuple[str, int], PairOutcome]:
    """Run the sweep's pairs `parallel` at a time in worker processes; progress from their logs.

    Without its evaluator yet, the sweep trains it in the first worker while the other workers
    train pairs (only scoring needs it): each pair is then trained first and scored once the
    evaluator is there. The evaluator's weights do not depend on which process trains it (its
    seed and thread count are the config's). If it fails, the pairs being trained finish and
    keep their checkpoints, the queued ones are cancelled, and its error ends the sweep, as it
    does when the evaluator is trained before the pairs."""
    todo = sweep.todo()
    outcomes: dict[tuple[str, int], PairOutcome] = {}
    threads = max(resolve_threads(cfg.train.threads) for cfg in sweep.configs.values())
    pinned = [cfg for cfg in sweep.configs.values() if cfg.train.numerics == "pinned"]
    if pinned:
        export_pin(pinned[0].train.threads)   # spawned workers load torch under it
    method = "fork" if threads == 1 and "fork" in multiprocessing.get_all_start_methods() else "spawn"
    evaluator_ready = sweep.segmenter.is_file()
    bar.write(f"ablate: {len(todo)} pair(s), {parallel} at a time in worker processes "
              f"({available_cores()} cores, {threads} thread(s) each)")
    done_steps = bar.n
    with ProcessPoolExecutor(max_workers=parallel, mp_context=multiprocessing.get_context(method)) as pool:
        jobs = {}          # future -> (kind, pair): kind "segmenter", "train" (not scored yet) or "pair"
        pending = set()
        counted = set()    # pairs whose training steps the bar has counted

        def submit(kind, pair=None):
            if kind == "segmenter":
                future = pool.submit(_segmenter_job, sweep)
            else:
                future = pool.submit(_pair_job, sweep.configs[pair], sweep.run_dir(*pair), sweep.segmenter,
                                     sweep.device, kind == "pair")
            jobs[future] = (kind, pair)
            pending.add(future)

        if not evaluator_ready:
            bar.write(f"training the segmentation evaluator -> {sweep.segmenter}, beside the first pairs")
            _evaluator_progress_path(sweep.out).unlink(missing_ok=True)   # an interrupted sweep's
            submit("segmenter")
        # Every pair, as the loop does: run_pair says "done" at once for a finished one.
        for pair in sweep.pairs:
            submit("pair" if evaluator_ready else "train", pair)
        trained: list[tuple[str, int]] = []   # trained, to be scored once the evaluator is there
        try:
            while pending:
                finished, _ = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                pending -= finished
                for future in finished:
                    kind, pair = jobs[future]
                    if kind == "segmenter":
                        future.result()   # its error ends the sweep (below: the queued pairs are cancelled)
                        evaluator_ready = True
                        bar.set_postfix_str("")
                        _evaluator_progress_path(sweep.out).unlink(missing_ok=True)
                        bar.write(f"segmentation evaluator trained: {sweep.segmenter}")
                        for waiting in trained:
                            submit("pair", waiting)
                        trained.clear()
                        continue
                    try:
                        job = future.result()
                    except Exception as e:  # noqa: BLE001 - the worker process itself died
                        job = {"status": "failed", "error": record_failure(sweep.run_dir(*pair), sweep.configs[pair], e)}
                    for text in job.get("warnings", ()):
                        warn_once(text)
                    status, error = job["status"], job.get("error")
                    if pair not in counted:
                        done_steps += sweep.configs[pair].train.steps
                        counted.add(pair)
                    if kind == "train" and status in ("finished", "done"):
                        bar.write(f"{pair[0]} seed {pair[1]}: trained"
                                  + ("" if evaluator_ready else ", scored once the evaluator is trained"))
                        if evaluator_ready:
                            submit("pair", pair)
                        else:
                            trained.append(pair)
                        continue
                    done_steps += 1
                    outcomes[pair] = PairOutcome(*pair, sweep.run_dir(*pair), status, error)
                    bar.write(f"{pair[0]} seed {pair[1]}: {status}{': ' + error if error else ''}")
                    if status == "interrupted":
                        raise TrainingInterrupted(*job["stop"])
                running = sum(logged_step(sweep.run_dir(*jobs[f][1])) or 0 for f in pending
                              if jobs[f][0] != "segmenter" and jobs[f][1] not in counted and f.running())
                bar.n = done_steps + running
                if not evaluator_ready:
                    seen = evaluator_progress(sweep.out)
                    # The evaluator's steps are not in the bar's total (its rate is the pairs'):
                    # they are shown beside it.
                    bar.set_postfix_str(f"evaluator {seen[0]}/{seen[1]} steps" if seen else "evaluator starting",
                                        refresh=False)
                bar.refresh()
        except BaseException:
            # Ctrl-C reached the workers too: each stops after its step with a checkpoint. An
            # evaluator that failed: the pairs in training finish and keep their checkpoints.
            for future in pending:
                future.cancel()
            raise
    return outcomes


def build_sweep_report(sweep: Sweep) -> Path:
    build_report(sweep.run_dirs, sweep.report_out, name=sweep.name)
    return sweep.report_out


def sweep_lock(out: Path, *, break_lock: bool = False):
    """The sweep folder's lock (OUT/.lock, `spade_bench.locks`), held while a sweep runs its pairs
    there: a second sweep into the same folder is refused instead of training every pair again."""
    return folder_lock(Path(out) / SWEEP_LOCK, "sweep folder", break_lock=break_lock)


def run_ablation(*, dataset: Optional[str] = None, root: Optional[str] = None,
                 variants: tuple[str, ...] = CORE_VARIANTS, seeds: tuple[int, ...] = (0,),
                 preset: str = "smoke", out: Optional[Path] = None, report_out: Optional[Path] = None,
                 overrides: Optional[list[str]] = None, device: str = "auto",
                 segmenter_steps: Optional[int] = None, echo=print, break_lock: bool = False,
                 max_parallel: Optional[int] = None) -> AblationResult:
    """Train, evaluate and report every (variant, seed) pair, holding the sweep folder's lock
    (`sweep_lock`; `break_lock` clears a stale one): one after another here, or on a CPU
    `pair_parallelism` at a time in worker processes (at most `max_parallel`)."""
    sweep = plan_sweep(dataset=dataset, root=root, variants=variants, seeds=seeds, preset=preset, out=out,
                       report_out=report_out, overrides=overrides, device=device,
                       segmenter_steps=segmenter_steps)
    with sweep_lock(sweep.out, break_lock=break_lock):
        return _run_ablation(sweep, echo, max_parallel)


def _run_ablation(sweep: Sweep, echo, max_parallel: Optional[int] = None) -> AblationResult:
    sweep.out.mkdir(parents=True, exist_ok=True)
    parallel = min(pair_parallelism(sweep, max_parallel), len(sweep.todo()))
    if parallel <= 1:
        ensure_segmenter(sweep, echo)   # side by side, a worker trains it beside the first pairs

    result = AblationResult(out=sweep.out, report_dir=None)
    seen_warnings: set[str] = set()
    steps_total = sum(cfg.train.steps for cfg in sweep.configs.values())
    bar = tqdm(total=steps_total + len(sweep.pairs), unit="step", dynamic_ncols=True, desc="ablate")

    def warn_once(text: str) -> None:
        # Each distinct evaluator warning once, above the bar (all are in metrics.json).
        key = text.split(" from ")[0] if "FID from" in text else text
        if key not in seen_warnings:
            seen_warnings.add(key)
            bar.write(f"warning: {text}")

    try:
        if parallel > 1:
            outcomes = _run_pairs_in_processes(sweep, parallel, bar, warn_once)
            result.pairs.extend(outcomes[pair] for pair in sweep.pairs)
        for variant, seed in sweep.pairs if parallel <= 1 else ():
            cfg = sweep.configs[(variant, seed)]
            run_dir = sweep.run_dir(variant, seed)
            bar.set_description(f"ablate {variant} s{seed}")
            done = {"step": 0}

            def progress(event, trainer, done=done):
                if event == "log":
                    bar.update(trainer.step - done["step"])
                    done["step"] = trainer.step

            try:
                status = run_pair(cfg, run_dir, sweep.segmenter, sweep.device, hooks=[progress], on_warning=warn_once)
                bar.update(cfg.train.steps - done["step"] + 1)
                result.pairs.append(PairOutcome(variant, seed, run_dir, status))
            except LockError as e:   # another process trains or scores this pair: not its failure
                bar.write(f"{variant} seed {seed} skipped: {e}")
                result.pairs.append(PairOutcome(variant, seed, run_dir, "failed", str(e)))
            except Exception as e:  # noqa: BLE001 - one pair's crash must not end the ablation
                message = record_failure(run_dir, cfg, e)
                bar.write(f"{variant} seed {seed} failed: {message}")
                result.pairs.append(PairOutcome(variant, seed, run_dir, "failed", message))
    finally:
        bar.close()
    result.report_dir = build_sweep_report(sweep)
    return result
