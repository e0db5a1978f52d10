"""The run folder: what `spade-bench train` writes and every other layer reads.

This module owns the folder's layout (every file and sub-folder name is spelled here and
nowhere else), the one reader of its JSON records, the code state recorded with training
and evaluation, and the provenance record of an imported run. It imports neither torch nor
any other part of spade-bench but `errors` and `io`, so eval/, reports/ and runners/ can
use it without importing the trainer.

    RUN/config.json            the resolved RunConfig
    RUN/env.json               versions, device, code state
    RUN/train_summary.json     status, step, speed, memory
    RUN/checkpoints/           step files and latest.pt (spade_bench.checkpoint)
    RUN/logs/losses.jsonl      loss records (plus losses.csv and tb/)
    RUN/samples/step_XXXXXXX.png
    RUN/eval/metrics.json      written by the evaluation harness
    RUN/eval/images/generation.json  what the stored evaluation images were made with
    RUN/eval/curve.json        the learning curve (eval/curve.py), its points' records in
                               RUN/eval/curve/step_XXXXXXX/ (as RUN/eval/, for that checkpoint)
    RUN/provenance.json        only in an imported run (`write_provenance`)
    RUN/failure_traceback.txt  a sweep's pair that failed (runners.ablate.record_failure)
    RUN/.lock, RUN/eval/.lock  held while the run trains / while it is scored (spade_bench.locks)
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from spade_bench.errors import RunFolderError
from spade_bench.io import atomic_write_json

CONFIG = "config.json"
ENV = "env.json"
SUMMARY = "train_summary.json"
PROVENANCE = "provenance.json"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
LOSSES = "losses.jsonl"
LOSSES_CSV = "losses.csv"
TENSORBOARD = "tb"
SAMPLES = "samples"
EVAL = "eval"
METRICS = "metrics.json"
EVAL_IMAGES = "images"
GENERATION_MANIFEST = "generation.json"
CURVE = "curve.json"
CURVE_POINTS = "curve"
FAILURE_TRACEBACK = "failure_traceback.txt"
LOCK = ".lock"

# Any of these files marks a folder as a run folder (a report's walk stops there).
MARKERS = (SUMMARY, CONFIG, f"{EVAL}/{METRICS}")
# Sub-folders of a run, never runs themselves.
SUBFOLDERS = (CHECKPOINTS, LOGS, SAMPLES, EVAL)


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder (nothing is created or read here).

    Args:
        root: the run directory (`train --out`).
    """

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def env(self) -> Path:
        return self.root / ENV

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY

    @property
    def provenance(self) -> Path:
        return self.root / PROVENANCE

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def logs(self) -> Path:
        return self.root / LOGS

    @property
    def losses(self) -> Path:
        return self.logs / LOSSES

    @property
    def losses_csv(self) -> Path:
        return self.logs / LOSSES_CSV

    @property
    def tensorboard(self) -> Path:
        return self.logs / TENSORBOARD

    @property
    def samples(self) -> Path:
        return self.root / SAMPLES

    def sample_grid(self, step: int) -> Path:
        return self.samples / f"step_{step:07d}.png"

    @property
    def eval(self) -> Path:
        return self.root / EVAL

    @property
    def metrics(self) -> Path:
        return self.eval / METRICS

    @property
    def eval_images(self) -> Path:
        return self.eval / EVAL_IMAGES

    @property
    def generation_manifest(self) -> Path:
        """What the stored evaluation images were made with (the harness writes it first)."""
        return generation_manifest(self.eval)

    @property
    def curve(self) -> Path:
        return self.eval / CURVE

    def curve_point(self, step: int) -> Path:
        """The evaluation folder of the learning curve's checkpoint at `step` (laid out as RUN/eval/)."""
        return self.eval / CURVE_POINTS / f"step_{step:07d}"

    @property
    def failure_traceback(self) -> Path:
        return self.root / FAILURE_TRACEBACK

    @property
    def lock(self) -> Path:
        """Held while the run trains (spade_bench.locks): one trainer per run folder."""
        return self.root / LOCK

    @property
    def eval_lock(self) -> Path:
        """Held while the run is scored: one evaluation per RUN/eval/."""
        return self.eval / LOCK

    def is_run(self) -> bool:
        """A folder holding any of MARKERS."""
        return self.root.is_dir() and any((self.root / marker).is_file() for marker in MARKERS)


def generation_manifest(eval_dir: str | Path) -> Path:
    """An evaluation folder's (RUN/eval/, or a learning-curve point's) record of what its stored
    images were made with."""
    return Path(eval_dir) / EVAL_IMAGES / GENERATION_MANIFEST


# ----------------------------------------------------------------------------- JSON records

def try_read_json(path: str | Path) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    """The one reader of a run's JSON records; never raises.

    Returns (record, None) when `path` holds a JSON object; (None, None) when the file does not
    exist; (None, problem) when it is unreadable, not JSON, or not an object: the problem is
    one line that names the file and what is wrong with it.
    """
    path = Path(path)
    if not path.exists():
        return None, None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return None, f"{path} cannot be read ({e}); rewrite it or delete it"
    try:
        data = json.loads(text)
    except ValueError as e:
        return None, f"{path} is not readable JSON ({e}); rewrite it or delete it"
    if not isinstance(data, dict):
        return None, f"{path} does not hold a JSON object (it holds a {type(data).__name__}); rewrite it or delete it"
    return data, None


def read_json(path: str | Path, *, missing_ok: bool = False) -> dict[str, Any]:
    """A run's JSON record; a RunFolderError names the file and the problem (missing, unreadable,
    not JSON, not an object). With `missing_ok` a file that does not exist reads as {}."""
    data, problem = try_read_json(path)
    if problem:
        raise RunFolderError(problem)
    if data is None:
        if missing_ok:
            return {}
        raise RunFolderError(f"{path} is missing; pass the folder `spade-bench train --out` wrote")
    return data


def read_json_or_empty(path: str | Path) -> dict[str, Any]:
    """A record that only annotates (hardware, speed, a job's status), or {} when the file is
    missing or broken: such a file must not stop a sweep, its status or its report."""
    return try_read_json(path)[0] or {}


def write_json(path: str | Path, record: Any) -> None:
    """Write a run record atomically (tmp + fsync + rename), indented, keys sorted."""
    atomic_write_json(path, record)


# ----------------------------------------------------------------------------- code state

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


# ----------------------------------------------------------------------------- provenance

def write_provenance(run_dir: str | Path, record: dict[str, Any]) -> Path:
    """RUN/provenance.json of an imported run ({"source": "nvlabs", ...}); returns its path."""
    path = RunFolder(run_dir).provenance
    write_json(path, record)
    return path


def read_provenance(run_dir: str | Path) -> Optional[dict[str, Any]]:
    """Where an imported run's weights came from, or None for a run trained here (no file).

    A broken file is a RunFolderError, not None: it decides whether a report shows the run as
    released weights or as a seed of our own training.
    """
    return read_json(RunFolder(run_dir).provenance, missing_ok=True) or None
