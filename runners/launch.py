"""Ablation pairs as jobs: local processes or SLURM, through submitit.

`spade-bench ablate --launcher local|slurm` makes each (variant, seed) pair one job that
trains, then scores, its pair (runners.ablate.run_pair: the same work the inline loop does).

- local: submitit's LocalExecutor, at most `--max-parallel` jobs at once, each in its own
  slot: its own GPUs (CUDA_VISIBLE_DEVICES) when there are GPUs, else its own share of
  the CPU cores (CPU affinity; the trainer's `train.threads=0` follows it). The evaluator
  is trained here first; the report is built when the last job ends.
- slurm: submitit's SlurmExecutor. The evaluator is one job; the pairs are one job array
  (`--max-parallel` is its `%` cap) that starts after it (afterok); the report is one
  job that starts after the whole array, failed tasks included (afterany).
- `--gpus-per-pair N`: N tasks per job, one GPU each; every task exports submitit's torch
  distributed environment (RANK, WORLD_SIZE, MASTER_ADDR, ...), which the trainer's
  torchrun path reads, so the pair trains with DDP.
- Preemption: on SIGUSR1 (sent by SLURM `--signal` before the time limit) or SIGTERM
  (preemption) the trainer finishes its step, checkpoints and raises TrainingInterrupted;
  the job then hands the signal to submitit's checkpointing hook, which calls
  `PairJob.checkpoint` and requeues the job (SLURM: scontrol requeue; local: the controller
  restarts it). The requeued job resumes from the checkpoint, bit-exactly.

Every launch writes OUT/sweep.json (the pairs, their job ids, the report folder), which
`--status OUT` and `--collect OUT` read as untrusted input (`read_manifest`: types checked, run
folders and job records always under OUT). A sweep's state comes from the files the project
writes (train_summary.json, metrics.json), the scheduler and the jobs' text logs: nothing in a
sweep folder is unpickled. submitit keeps its job records in OUT/.submitit/. While the local
launcher runs, OUT/.lock names it (a second launch into OUT is refused).
submitit is the optional extra `spade-bench[slurm]`; the inline launcher does not need it.
"""
from __future__ import annotations

import json
import math
import os
import re
import signal
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from reports.build import build_report
from runners.ablate import (Sweep, curve_to_score, ensure_segmenter, logged_step, mark_failed, metrics_to_score,
                            pair_dir, pair_is_done, pair_parallelism, record_failure, run_pair, scores_checkpoint,
                            sweep_lock)
from spade_bench.config import load_config_file, save_config
from spade_bench.errors import ConfigError, LockError, TrainingInterrupted
from spade_bench.io import atomic_write_json
from spade_bench.run_folder import RunFolder, read_json_or_empty, try_read_json

LAUNCHERS = ("inline", "local", "slurm")
MANIFEST = "sweep.json"
JOBS_DIR = ".submitit"
# The signal SLURM sends before the time limit (`--signal=USR1@SECONDS`) and that submitit's
# requeue hook listens to; the trainer stops gracefully on it (SIGUSR2, submitit's default,
# it does not catch).
PREEMPT_SIGNAL = "USR1"
SIGNAL_DELAY_S = 180        # time between the signal and the kill: finish a step and checkpoint
MAX_REQUEUES = 50           # timed-out requeues per pair (preemptions do not count)
LOCAL_TIMEOUT_MIN = 60 * 24 * 365
POLL_S = 1.0


@dataclass(frozen=True)
class LaunchOptions:
    """How `ablate` runs its pairs (validated by `check`)."""

    launcher: str = "inline"
    gpus_per_pair: Optional[int] = None   # None: slurm 1; local 1 with GPUs, else 0 (CPU)
    max_parallel: Optional[int] = None
    slurm_partition: Optional[str] = None
    slurm_time: Optional[str] = None
    slurm_account: Optional[str] = None
    slurm_extra: tuple[str, ...] = ()

    def gpus(self) -> int:
        if self.gpus_per_pair is not None:
            return self.gpus_per_pair
        if self.launcher == "slurm":
            return 1
        return 1 if torch.cuda.is_available() else 0

    def tasks(self) -> int:
        return max(1, self.gpus())

    def check(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise ConfigError(f"--launcher {self.launcher!r}: choose inline, local or slurm")
        if self.gpus_per_pair is not None and self.gpus_per_pair < 0:
            raise ConfigError(f"--gpus-per-pair must be 0 (CPU) or more, got {self.gpus_per_pair}")
        if self.max_parallel is not None and self.max_parallel < 1:
            raise ConfigError(f"--max-parallel must be at least 1, got {self.max_parallel}")
        slurm_given = [name for name, value in (
            ("--slurm-partition", self.slurm_partition), ("--slurm-time", self.slurm_time),
            ("--slurm-account", self.slurm_account), ("--slurm-extra", self.slurm_extra)) if value]
        if self.launcher != "slurm" and slurm_given:
            raise ConfigError(f"{', '.join(slurm_given)} only apply with --launcher slurm")
        if self.launcher == "inline" and self.gpus_per_pair:
            raise ConfigError("--gpus-per-pair needs --launcher local or slurm; inline runs the pairs here "
                              "(on a CPU several at once: --max-parallel caps them)")
        if self.launcher == "slurm":
            if not self.slurm_time:
                raise ConfigError("--launcher slurm needs --slurm-time (e.g. 3-00:00:00 or 4320 minutes); "
                                  "a pair that reaches it is requeued from its checkpoint")
            parse_slurm_time(self.slurm_time)
            parse_extra(self.slurm_extra)


def parse_slurm_time(text: str) -> int:
    """SLURM's time formats (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) -> whole minutes."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise ConfigError(f"--slurm-time {text!r}: use minutes or SLURM's D-HH:MM:SS, e.g. 3-00:00:00")
    days, a, b, c = m.groups()
    a, b, c = int(a), int(b or 0), int(c or 0)
    if days is not None:   # D-HH[:MM[:SS]]
        seconds = int(days) * 86400 + a * 3600 + b * 60 + c
    elif c or m.group(4) is not None:   # HH:MM:SS
        seconds = a * 3600 + b * 60 + c
    else:                  # MM[:SS]
        seconds = a * 60 + b
    minutes = math.ceil(seconds / 60)
    if minutes < 1:
        raise ConfigError(f"--slurm-time {text!r} is shorter than a minute")
    return minutes


def parse_extra(items: tuple[str, ...]) -> dict[str, Any]:
    """--slurm-extra KEY=VALUE (or a bare KEY for a flag) -> sbatch `#SBATCH --KEY=VALUE` lines."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not key or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key):
            raise ConfigError(f"--slurm-extra {item!r}: use KEY=VALUE with an sbatch option name, "
                              f"e.g. --slurm-extra qos=high or --slurm-extra cpus-per-task=10")
        out[key.replace("-", "_")] = value if sep else True
    return out


def _import_submitit():
    # submitit is the optional extra [slurm]: the default inline launcher must not need it.
    try:
        import submitit
    except ImportError:
        raise ConfigError("--launcher local and slurm need submitit: pip install 'spade-bench[slurm]'") from None
    return submitit


# ----------------------------------------------------------------------------- the jobs

def _pin_cpus(cpus: Optional[tuple[int, ...]], cfg=None) -> None:
    """Keep this job on its share of the cores (the trainer's train.threads=0 reads the affinity).
    A pinned config keeps its own thread count (train.threads), whatever the share: the count
    decides its bits."""
    if not cpus:
        return
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)
    pinned = cfg is not None and cfg.train.numerics == "pinned"
    torch.set_num_threads(cfg.train.threads if pinned else len(cpus))


def _distributed_rank() -> int:
    """Several tasks per job: export submitit's torch distributed environment for the
    trainer's torchrun path (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return 0   # called directly, not as a submitit job
    submitit = _import_submitit()
    env = submitit.JobEnvironment()
    if env.num_tasks <= 1:
        return 0
    # CUDA_VISIBLE_DEVICES stays as given (a local slot's GPUs, or SLURM's); each rank
    # takes cuda:LOCAL_RANK among them.
    dist_env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False,
                                                                    overwrite=True)
    return dist_env.rank


def _requeue_through_submitit(interrupt: TrainingInterrupted) -> None:
    """Hand a graceful stop to submitit's checkpointing hook, which requeues this job.

    submitit installed its handler for the preemption signal before calling the job, and
    the trainer restored it after stopping. Raising that signal here runs it: it calls
    `PairJob.checkpoint`, dumps the resubmission, requeues (SLURM: scontrol requeue;
    local: exit code 144, which the controller answers by restarting the task) and exits.
    Outside a submitit job the interrupt propagates unchanged.
    """
    sig = getattr(signal, "SIG" + PREEMPT_SIGNAL)
    handler = signal.getsignal(sig)
    owner = getattr(getattr(handler, "__self__", None), "__class__", type(None)).__module__
    if not os.environ.get("SUBMITIT_EXECUTOR") or not owner.startswith("submitit"):
        raise interrupt
    print(f"{interrupt.signal_name} at step {interrupt.step}: checkpoint {interrupt.checkpoint}; "
          f"requeueing through submitit", flush=True)
    signal.raise_signal(sig)
    # Only global rank 0 requeues and exits in the handler; the other ranks end here.
    raise SystemExit(0)


class PairJob:
    """One (variant, seed) pair as a submitit job: train (resuming), then score on rank 0.

    Checkpointable the way submitit checks it (it has a `checkpoint` method): on preemption
    or time-out submitit calls `checkpoint()`, which resubmits this same job; the trainer's
    checkpoint holds the state, so the resubmitted job resumes where it stopped.
    (Inheriting submitit.helpers.Checkpointable would make submitit a hard dependency.)
    """

    def __init__(self, sweep: Sweep, variant: str, seed: int, cpus: Optional[tuple[int, ...]] = None):
        self.cfg = sweep.configs[(variant, seed)]
        self.run_dir = sweep.run_dir(variant, seed)
        self.segmenter = sweep.segmenter
        self.device = sweep.device
        self.variant, self.seed, self.cpus = variant, seed, cpus

    def __call__(self) -> str:
        _pin_cpus(self.cpus, self.cfg)
        rank = _distributed_rank()
        try:
            return run_pair(self.cfg, self.run_dir, self.segmenter, self.device, evaluate=rank == 0)
        except TrainingInterrupted as interrupt:
            _requeue_through_submitit(interrupt)
            raise
        except LockError:
            raise  # another process trains or scores this pair: not its failure (nothing recorded)
        except Exception as e:
            if rank == 0:
                record_failure(self.run_dir, self.cfg, e)
            raise  # submitit records it too (SLURM state FAILED; the log names it)

    def checkpoint(self, *args: Any, **kwargs: Any):
        submitit = _import_submitit()
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def segmenter_job(sweep: Sweep) -> str:
    """SLURM: train the sweep's evaluator once, before any pair is scored."""
    return str(ensure_segmenter(sweep))


def report_job(out: str) -> str:
    """SLURM: the last job; builds the report from whatever the pairs left (failures included)."""
    return str(collect(Path(out)))


# ----------------------------------------------------------------------------- manifest

def manifest_path(out: Path) -> Path:
    return Path(out) / MANIFEST


_VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
_JOB_ID = re.compile(r"\d+(_\d+)?")


def read_manifest(out: Path) -> dict[str, Any]:
    """OUT/sweep.json, checked as untrusted input: anyone may hand over a sweep folder. Only
    what the sweep's state needs is taken from it (launcher, name, report folder, each pair's
    variant, seed, job id and steps), each of its expected type and shape; the run folders are
    OUT/<variant>-s<seed> (`pair_dir`) and submitit's records OUT/.submitit, whatever the file
    says, so it cannot point the status or the collection at other folders. Nothing a sweep
    folder holds is unpickled. A malformed file is a ConfigError naming it and the problem."""
    out = Path(out)
    path = manifest_path(out)
    record, problem = try_read_json(path)
    if record is None:
        raise ConfigError(problem.replace("rewrite it or delete it", "relaunch the sweep to rewrite it") if problem else
                          f"{path} not found: {out} is not a sweep launched with --launcher local or slurm "
                          f"(pass the --out folder of `spade-bench ablate`)")

    def bad(what: str) -> ConfigError:
        return ConfigError(f"{path}: {what}; this is not a sweep.json spade-bench wrote (relaunch the sweep to "
                           f"rewrite it)")

    if record.get("launcher") not in ("local", "slurm"):
        raise bad(f"launcher {record.get('launcher')!r} is not 'local' or 'slurm'")
    for key in ("name", "report_out"):
        if not isinstance(record.get(key), str) or not record[key]:
            raise bad(f"{key} {record.get(key)!r} is not a non-empty string")
    pairs = record.get("pairs")
    if not isinstance(pairs, list) or not all(isinstance(p, dict) for p in pairs):
        raise bad("pairs is not a list of objects")
    clean = []
    for i, pair in enumerate(pairs):
        variant, seed, job_id, steps = pair.get("variant"), pair.get("seed"), pair.get("job_id"), pair.get("steps")
        if not isinstance(variant, str) or not _VARIANT_NAME.fullmatch(variant):
            raise bad(f"pairs[{i}].variant {variant!r} is not a variant name")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise bad(f"pairs[{i}].seed {seed!r} is not a seed")
        if job_id is not None and not (isinstance(job_id, str) and _JOB_ID.fullmatch(job_id)):
            raise bad(f"pairs[{i}].job_id {job_id!r} is not a job id")
        if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool)):
            raise bad(f"pairs[{i}].steps {steps!r} is not a number of steps")
        clean.append({"variant": variant, "seed": seed, "job_id": job_id, "steps": steps,
                      "run_dir": str(pair_dir(out, variant, seed))})
    return {"launcher": record["launcher"], "name": record["name"], "report_out": record["report_out"],
            "jobs_folder": str(out / JOBS_DIR), "pairs": clean}


def _new_manifest(sweep: Sweep, opts: LaunchOptions) -> dict[str, Any]:
    return {
        "schema": 1, "name": sweep.name, "launcher": opts.launcher, "out": str(sweep.out),
        "report_out": str(sweep.report_out), "jobs_folder": str(sweep.out / JOBS_DIR),
        "segmenter": str(sweep.segmenter), "segmenter_job": None, "report_job": None,
        "gpus_per_pair": opts.gpus(), "tasks_per_pair": opts.tasks(),
        "pairs": [{"variant": v, "seed": s, "run_dir": str(sweep.run_dir(v, s)), "job_id": None,
                   "steps": sweep.configs[(v, s)].train.steps, "resources": None}
                  for v, s in sweep.pairs],
    }


def _absolute(sweep: Sweep) -> Sweep:
    """Jobs may start in another directory (SLURM nodes): give them absolute paths."""
    sweep.out, sweep.report_out, sweep.segmenter = (sweep.out.resolve(), sweep.report_out.resolve(),
                                                    sweep.segmenter.resolve())
    return sweep


# ----------------------------------------------------------------------------- resources

@dataclass
class Slot:
    """What one local job may use: GPU ids, or CPU cores."""

    gpus: tuple[int, ...] = ()
    cpus: tuple[int, ...] = ()

    def describe(self) -> str:
        if self.gpus:
            return f"GPU{'s' if len(self.gpus) > 1 else ''} {','.join(map(str, self.gpus))}"
        return f"CPU cores {_ranges(self.cpus)} ({len(self.cpus)} thread{'s' if len(self.cpus) > 1 else ''})"


def _ranges(values: tuple[int, ...]) -> str:
    parts, run = [], []
    for v in sorted(values):
        if run and v == run[-1] + 1:
            run.append(v)
            continue
        if run:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [v]
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(parts)


def visible_gpus() -> list[int]:
    """GPU ids this process may hand out (CUDA_VISIBLE_DEVICES when set, else all)."""
    if not torch.cuda.is_available():
        return []
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given:
        ids = [x.strip() for x in given.split(",") if x.strip()]
        if all(x.isdigit() for x in ids):
            return [int(x) for x in ids]
    return list(range(torch.cuda.device_count()))


def available_cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def local_slots(opts: LaunchOptions, n_pairs: int) -> list[Slot]:
    """Split this machine into `--max-parallel` slots (default: as many as the GPUs allow, or 1 on CPU)."""
    gpus_per_pair = opts.gpus()
    if gpus_per_pair:
        gpus = visible_gpus()
        if len(gpus) < gpus_per_pair:
            raise ConfigError(f"--gpus-per-pair {gpus_per_pair} but {len(gpus)} GPU(s) are visible here; "
                              f"lower it, or pass --gpus-per-pair 0 to train on CPU")
        fit = len(gpus) // gpus_per_pair
        n = min(opts.max_parallel or fit, n_pairs)
        if n > fit:
            raise ConfigError(f"--max-parallel {n} x --gpus-per-pair {gpus_per_pair} needs {n * gpus_per_pair} "
                              f"GPUs; {len(gpus)} are visible. Use --max-parallel {fit} or fewer")
        return [Slot(gpus=tuple(gpus[i * gpus_per_pair:(i + 1) * gpus_per_pair])) for i in range(n)]
    cpus = available_cpus()
    n = min(opts.max_parallel or 1, n_pairs)
    if n > len(cpus):
        raise ConfigError(f"--max-parallel {n} on CPU needs a core per pair; this process may use {len(cpus)}. "
                          f"Use --max-parallel {len(cpus)} or fewer")
    share = len(cpus) // n
    return [Slot(cpus=tuple(cpus[i * share:(i + 1) * share])) for i in range(n)]


def slurm_parameters(sweep: Sweep, opts: LaunchOptions, n_pairs: int) -> dict[str, Any]:
    """submitit SlurmExecutor parameters for the pair array."""
    gpus = opts.gpus()
    params: dict[str, Any] = {
        "job_name": sweep.name, "time": parse_slurm_time(opts.slurm_time or ""), "nodes": 1,
        "ntasks_per_node": opts.tasks(), "signal_delay_s": SIGNAL_DELAY_S,
        "array_parallelism": min(opts.max_parallel or n_pairs, max(n_pairs, 1)),
        # submitit's own `--signal` uses the preemption signal of the submitting process;
        # the jobs listen to PREEMPT_SIGNAL (exported below), so say it explicitly.
        "additional_parameters": {"signal": f"{PREEMPT_SIGNAL}@{SIGNAL_DELAY_S}", **parse_extra(opts.slurm_extra)},
        "setup": [f"export SUBMITIT_PREEMPT_SIGNAL={PREEMPT_SIGNAL}"],
    }
    if gpus:
        params["gpus_per_node"] = gpus
    if opts.slurm_partition:
        params["partition"] = opts.slurm_partition
    if opts.slurm_account:
        params["account"] = opts.slurm_account
    return params


def resolve_options(sweep: Sweep, opts: LaunchOptions) -> LaunchOptions:
    """A sweep whose every config says train.device=cpu (the smoke preset) asks for no GPUs
    unless --gpus-per-pair says otherwise."""
    if opts.gpus_per_pair is None and all(cfg.train.device == "cpu" for cfg in sweep.configs.values()):
        return replace(opts, gpus_per_pair=0)
    return opts


def plan_lines(sweep: Sweep, opts: LaunchOptions) -> list[str]:
    """One line per pair: what would run where, with which resources (for --dry-run)."""
    opts = resolve_options(sweep, opts)
    todo = sweep.todo()
    todo_set = set(todo)
    lines = []
    slots = local_slots(opts, max(len(todo), 1)) if opts.launcher == "local" else []
    params = slurm_parameters(sweep, opts, len(todo)) if opts.launcher == "slurm" else {}
    parallel = min(pair_parallelism(sweep, opts.max_parallel), len(todo)) if opts.launcher == "inline" else 1

    def resources(i: int) -> str:
        if slots:
            return f"local slot {i % len(slots)}: {slots[i % len(slots)].describe()}"
        if params:
            where = "".join(f", {k} {params[k]}" for k in ("partition", "account") if k in params)
            return (f"slurm array task {i}: 1 node, {opts.tasks()} task(s), {params.get('gpus_per_node', 0)} "
                    f"GPU(s), time {params['time']} min{where}")
        if parallel > 1:
            return f"inline (worker processes, {parallel} pairs at a time; pair {i + 1} of {len(todo)})"
        return f"inline (this process, pair {i + 1} of {len(todo)})"

    i = 0
    for variant, seed in sweep.pairs:
        cfg = sweep.configs[(variant, seed)]
        run_dir = sweep.run_dir(variant, seed)
        if (variant, seed) not in todo_set:
            lines.append(f"{variant} seed {seed}: already finished ({run_dir}); skipped")
            continue
        missing = _scoring_only(run_dir, cfg)
        work = (f"trained; scores {', '.join(missing)} only (the other metrics are kept)" if missing else
                f"{cfg.train.steps} steps, batch {cfg.train.batch_size}")
        lines.append(f"{variant} seed {seed}: {work}; {resources(i)} -> {run_dir}")
        i += 1
    if params:
        seg = "" if sweep.segmenter.is_file() else "evaluator job first (afterok), "
        lines.append(f"slurm: {seg}array of {len(todo)} (at most {params['array_parallelism']} at once), "
                     f"report job after the array (afterany); submitit parameters: "
                     f"{json.dumps(params, sort_keys=True)}")
    if opts.launcher == "local" and not sweep.segmenter.is_file():
        lines.append(f"the evaluator is trained first, here -> {sweep.segmenter}")
    return lines


# ----------------------------------------------------------------------------- launch

def launch(sweep: Sweep, opts: LaunchOptions, echo: Callable[[str], None] = print, *,
           break_lock: bool = False) -> dict[str, Any]:
    """Run the sweep's pairs as jobs. local: blocks until every pair ends, then builds the
    report. slurm: submits the evaluator, the array and the report job, then returns. Holds
    the sweep folder's lock meanwhile (`runners.ablate.sweep_lock`; `break_lock` clears a stale one)."""
    opts.check()
    if opts.launcher not in ("local", "slurm"):
        raise ConfigError(f"launch() runs the pairs as local or slurm jobs, not --launcher {opts.launcher}; "
                          f"run an inline sweep with runners.ablate.run_ablation (spade-bench ablate without "
                          f"--launcher)")
    opts = resolve_options(sweep, opts)
    submitit = _import_submitit()
    sweep = _absolute(sweep)
    # local: the lock is held until every pair has ended; slurm: while submitting, and a sweep
    # whose jobs are still queued or running is not submitted again.
    with sweep_lock(sweep.out, break_lock=break_lock):
        if opts.launcher == "slurm":
            _refuse_live_jobs(sweep.out)
        return _launch(submitit, sweep, opts, echo)


def _refuse_live_jobs(out: Path) -> None:
    """A sweep launched before whose jobs have not all ended would train its pairs twice."""
    if not manifest_path(out).is_file():
        return
    manifest = read_manifest(out)
    live = [p["job_id"] for p in manifest["pairs"]
            if p["job_id"] and manifest["launcher"] == "slurm" and not _job_record(manifest, p["job_id"])[1]]
    if live:
        raise LockError(f"{out}: jobs of the sweep launched there earlier are still queued or running "
                        f"({', '.join(live[:5])}{' ...' if len(live) > 5 else ''}); wait for them (spade-bench "
                        f"ablate --status {out}) or cancel them (scancel) before launching again")


def _launch(submitit, sweep: Sweep, opts: LaunchOptions, echo) -> dict[str, Any]:
    sweep.out.mkdir(parents=True, exist_ok=True)
    # A pending pair already has its config.json: --status and the report name it properly.
    for (variant, seed), cfg in sweep.configs.items():
        config_path = RunFolder(sweep.run_dir(variant, seed)).config
        if not config_path.is_file():
            save_config(cfg, config_path)
    manifest = _new_manifest(sweep, opts)
    atomic_write_json(manifest_path(sweep.out), manifest)
    if opts.launcher == "local":
        return _launch_local(submitit, sweep, opts, manifest, echo)
    return _launch_slurm(submitit, sweep, opts, manifest, echo)


def _launch_local(submitit, sweep: Sweep, opts: LaunchOptions, manifest: dict, echo) -> dict[str, Any]:
    ensure_segmenter(sweep, echo)   # before any pair is scored, here, once
    todo = _todo_indices(sweep)
    todo_set = set(todo)
    for i, (v, s) in enumerate(sweep.pairs):
        if i not in todo_set:
            echo(f"{v} seed {s}: already finished")
    slots = local_slots(opts, max(len(todo), 1))
    executor = submitit.LocalExecutor(folder=sweep.out / JOBS_DIR, max_num_timeout=MAX_REQUEUES)
    free = list(range(len(slots)))
    running: dict[int, tuple[Any, int]] = {}   # pair index -> (job, slot)
    queue = list(todo)
    outcomes: dict[int, str] = {}
    while queue or running:
        while queue and free:
            i, slot_index = queue.pop(0), free.pop(0)
            variant, seed = sweep.pairs[i]
            slot = slots[slot_index]
            executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, tasks_per_node=opts.tasks(),
                                       gpus_per_node=len(slot.gpus), visible_gpus=slot.gpus,
                                       signal_delay_s=SIGNAL_DELAY_S)
            # The job processes read the preemption signal when they import submitit.
            with submitit.helpers.environment_variables(SUBMITIT_PREEMPT_SIGNAL=PREEMPT_SIGNAL):
                job = executor.submit(PairJob(sweep, variant, seed, cpus=slot.cpus or None))
            running[i] = (job, slot_index)
            manifest["pairs"][i].update(job_id=str(job.job_id), resources=slot.describe())
            atomic_write_json(manifest_path(sweep.out), manifest)
            echo(f"{variant} seed {seed}: job {job.job_id} on {slot.describe()}")
        for i, (job, slot_index) in list(running.items()):
            if not job.done():
                continue
            del running[i]
            free.append(slot_index)
            variant, seed = sweep.pairs[i]
            outcomes[i] = _job_outcome(job, sweep.run_dir(variant, seed), sweep.configs[(variant, seed)],
                                       sweep.out / JOBS_DIR)
            echo(f"{variant} seed {seed}: {outcomes[i]}")
        if running:
            time.sleep(POLL_S)
    report = collect(sweep.out)
    echo(f"report: {report / 'ablation.md'}")
    return manifest


def _todo_indices(sweep: Sweep) -> list[int]:
    """Indices into sweep.pairs of the pairs still to do (`Sweep.todo`), in order."""
    todo = set(sweep.todo())
    return [i for i, pair in enumerate(sweep.pairs) if pair in todo]


def _job_outcome(job, run_dir: Path, cfg, jobs_folder: Path) -> str:
    """'finished', or 'failed: reason', from the run folder (the pair is done, or its job recorded
    its error) and the job's stderr log; the job's result pickle is never read."""
    if pair_is_done(run_dir, cfg):
        return "finished"
    summary = read_json_or_empty(RunFolder(run_dir).summary)
    if summary.get("status") == "failed":
        return f"failed: {summary.get('error') or 'no error recorded'}"
    reason = _log_error(jobs_folder, str(job.job_id)) or "the job ended without finishing the pair (killed?)"
    mark_failed(run_dir, f"job {job.job_id}: {reason}")
    return f"failed: {reason}"


def _launch_slurm(submitit, sweep: Sweep, opts: LaunchOptions, manifest: dict, echo) -> dict[str, Any]:
    folder = sweep.out / JOBS_DIR
    todo = _todo_indices(sweep)
    params = slurm_parameters(sweep, opts, len(todo))
    single = {k: v for k, v in params.items() if k not in ("ntasks_per_node", "gpus_per_node", "array_parallelism")}

    dependency = None
    if not sweep.segmenter.is_file():
        seg_ex = submitit.SlurmExecutor(folder=folder)
        seg_ex.update_parameters(**{**single, "job_name": f"{sweep.name}-evaluator"},
                                 **({"gpus_per_node": 1} if opts.gpus() else {}))
        seg_job = seg_ex.submit(segmenter_job, sweep)
        manifest["segmenter_job"] = str(seg_job.job_id)
        dependency = f"afterok:{seg_job.job_id}"
        echo(f"evaluator: job {seg_job.job_id} -> {sweep.segmenter}")

    array_id = None
    if todo:
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=MAX_REQUEUES)
        executor.update_parameters(**params, **({"dependency": dependency} if dependency else {}))
        with executor.batch():
            jobs = [executor.submit(PairJob(sweep, *sweep.pairs[i])) for i in todo]
        for i, job in zip(todo, jobs):
            variant, seed = sweep.pairs[i]
            manifest["pairs"][i].update(job_id=str(job.job_id),
                                        resources=f"{opts.tasks()} task(s), {opts.gpus()} GPU(s)")
            echo(f"{variant} seed {seed}: job {job.job_id}")
        array_id = str(jobs[0].job_id).split("_")[0]

    report_ex = submitit.SlurmExecutor(folder=folder)
    report_ex.update_parameters(**{**single, "job_name": f"{sweep.name}-report"},
                                **({"dependency": f"afterany:{array_id}"} if array_id else {}))
    report = report_ex.submit(report_job, str(sweep.out))
    manifest["report_job"] = str(report.job_id)
    atomic_write_json(manifest_path(sweep.out), manifest)
    echo(f"report: job {report.job_id} -> {sweep.report_out / 'ablation.md'} when the last pair ends. "
         f"Follow with: spade-bench ablate --status {sweep.out}")
    return manifest


# ----------------------------------------------------------------------------- status, collect

@dataclass
class PairStatus:
    variant: str
    seed: int
    run_dir: Path
    state: str                # pending, running, interrupted, partly scored, finished, failed
    detail: str = ""
    job_id: Optional[str] = None
    job_over: bool = False    # submitit/SLURM says the job has ended
    extra: dict = field(default_factory=dict)

    def line(self) -> str:
        job = f" [job {self.job_id}]" if self.job_id else ""
        return f"{self.variant} seed {self.seed}: {self.state}{': ' + self.detail if self.detail else ''}{job}"


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupted|Exit|Interrupt)\b.*")


def _log_error(jobs_folder: Path, job_id: str) -> Optional[str]:
    """The exception line at the end of a job's stderr log (submitit's OUT/.submitit/ID_0_log.err),
    read as text: a job's state is never unpickled from its result file."""
    try:
        with open(jobs_folder / f"{job_id}_0_log.err", "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            tail = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    raised = [ln for ln in lines if _EXCEPTION_LINE.match(ln)]
    return raised[-1][:500] if raised else None


def _job_record(manifest: dict, job_id: Optional[str]) -> tuple[Optional[str], bool, Optional[str]]:
    """(scheduler state, job has ended, error from the job's stderr log) for one job id. How a pair
    ended is read from its run folder (train_summary.json: a job that raises records its error
    there); this adds what the scheduler and the job's log say."""
    if not job_id:
        return None, False, None
    folder = Path(manifest["jobs_folder"])
    if manifest["launcher"] == "local":
        # The job id is the local controller's process id.
        try:
            os.kill(int(job_id), 0)
            alive = True
        except (ProcessLookupError, ValueError, OverflowError):
            alive = False
        except PermissionError:
            alive = True
        return ("RUNNING" if alive else "ENDED"), not alive, None if alive else _log_error(folder, job_id)
    submitit = _import_submitit()
    state = submitit.SlurmJob(folder=folder, job_id=job_id).state   # sacct; UNKNOWN without it
    over = state.split()[0].upper() not in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING", "PREEMPTED",
                                            "UNKNOWN", "READY", "SUSPENDED", "CONFIGURING", "RESIZING")
    return state, over, _log_error(folder, job_id) if over else None


def _pair_done(run_dir: Path) -> bool:
    """`pair_is_done` under the pair's own RUN/config.json (written at launch): metrics.json
    scores its final checkpoint under exactly that config, with every registered metric at
    this code's version. The rule a relaunch skips by."""
    try:
        cfg = load_config_file(RunFolder(run_dir).config)
    except (ConfigError, OSError, ValueError):
        return False
    return pair_is_done(run_dir, cfg)


def _scoring_only(run_dir: Path, cfg=None) -> dict[str, str]:
    """{metric: why} when the pair's metrics.json scores its final checkpoint under its config but
    lacks metrics (added since) or holds older versions: a relaunch scores only those.
    Empty otherwise (done, or not scored at all)."""
    try:
        cfg = cfg or load_config_file(RunFolder(run_dir).config)
    except (ConfigError, OSError, ValueError):
        return {}
    if not scores_checkpoint(read_json_or_empty(RunFolder(run_dir).metrics), cfg, run_dir):
        return {}
    todo = metrics_to_score(run_dir, cfg)
    if steps := curve_to_score(run_dir, cfg):
        todo[f"learning-curve steps {', '.join(map(str, steps))}"] = "eval.curve_points"
    return todo


def pair_statuses(out: Path) -> list[PairStatus]:
    """One status per pair, from the run folders and submitit's job records. "finished" is
    `pair_is_done`'s rule, the one a relaunch uses to skip a pair; "partly scored" a trained
    and scored pair that lacks metrics added (or re-versioned) since, which a relaunch scores."""
    manifest = read_manifest(out)
    statuses = []
    for pair in manifest["pairs"]:
        run_dir = Path(pair["run_dir"])
        summary = read_json_or_empty(RunFolder(run_dir).summary)
        metrics = read_json_or_empty(RunFolder(run_dir).metrics)
        state, over, error = _job_record(manifest, pair.get("job_id"))
        steps = pair.get("steps")
        st = PairStatus(pair["variant"], int(pair["seed"]), run_dir, "pending", job_id=pair.get("job_id"),
                        job_over=over)
        train_status = summary.get("status")
        if metrics and _pair_done(run_dir):
            m = metrics.get("metrics") if isinstance(metrics.get("metrics"), dict) else {}
            shown = ", ".join(f"{k} {m[k]:.4g}" for k in ("fid", "miou") if isinstance(m.get(k), (int, float)))
            st.state, st.detail = "finished", shown
        elif train_status == "failed":
            st.state, st.detail = "failed", str(summary.get("error") or "no error recorded")
        elif error:
            st.state, st.detail = "failed", error
        elif missing := _scoring_only(run_dir):
            m = metrics.get("metrics") if isinstance(metrics.get("metrics"), dict) else {}
            shown = ", ".join(f"{k} {m[k]:.4g}" for k in ("fid", "miou") if isinstance(m.get(k), (int, float)))
            reasons: dict[str, list[str]] = {}
            for name, why in missing.items():
                reasons.setdefault(why, []).append(name)
            st.state = "partly scored"
            st.detail = ((shown + "; " if shown else "") + "to score: "
                         + "; ".join(f"{', '.join(names)} ({why})" for why, names in reasons.items())
                         + "; a relaunch scores only these")
        elif over and state not in (None, "ENDED") and state.split()[0].upper() != "COMPLETED":
            st.state, st.detail = "failed", f"job ended in state {state} before the pair finished"
        elif over:
            st.state, st.detail = "failed", "job ended without finishing the pair (killed?); relaunch to resume it"
        elif train_status in ("running", "interrupted", "finished"):
            step = logged_step(run_dir) if train_status == "running" else summary.get("step")
            step = summary.get("step") if step is None else step
            if train_status == "interrupted":
                st.state = "interrupted"
                st.detail = f"stopped at step {step}/{steps}, checkpointed; requeued"
            elif train_status == "finished":
                st.state, st.detail = "running", f"trained {step}/{steps} steps; evaluating"
            else:
                st.state, st.detail = "running", f"step {step if step is not None else 0}/{steps}"
        else:
            st.detail = "not started" if state in (None, "RUNNING", "ENDED", "UNKNOWN") else f"job state {state}"
        if state and manifest["launcher"] == "slurm" and st.state not in ("finished",):
            st.detail += f" (SLURM: {state})"
        statuses.append(st)
    return statuses


def collect(out: Path) -> Path:
    """Build the sweep's report now. A pair whose job has ended without finishing it is
    recorded as failed first (with the reason), so the report lists it; pairs still
    running are shown as not evaluated."""
    manifest = read_manifest(out)
    for st in pair_statuses(out):
        if st.state == "failed" and read_json_or_empty(RunFolder(st.run_dir).summary).get("status") != "failed":
            mark_failed(st.run_dir, st.detail)
    report_out = Path(manifest["report_out"])
    build_report([Path(p["run_dir"]) for p in manifest["pairs"]], report_out, name=manifest["name"])
    return report_out
