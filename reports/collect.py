"""Read run directories (finished and failed) into records that the report builders share.

A run directory is what `spade-bench train` writes and `spade-bench eval --run` completes
(docs/ARCHITECTURE.md, "Run directory" and "Evaluation output"). A run whose
train_summary.json says "failed", or that has no usable eval/metrics.json, becomes a
record with status "failed" and its reason, so that every table shows it instead of
dropping it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from spade_bench.config import RunConfig, experiment_dict, hash_names_config
from spade_bench.data.formats import FORMATS
from spade_bench.errors import SpadeBenchError
from spade_bench.metrics import metric_keys, owner
from spade_bench.run_folder import (ENV, METRICS, SUBFOLDERS, TENSORBOARD, RunFolder, read_json_or_empty,
                                     try_read_json)

METRICS_SCHEMA = 1
# Folders that never hold other runs: a run's sub-folders, and what reports write.
_NOT_RUNS = {*SUBFOLDERS, TENSORBOARD, "figures", "__pycache__"}
MAX_SEARCH_DEPTH = 4


class ReportError(SpadeBenchError):
    """The report cannot be built (no runs found, unreadable inputs)."""


@dataclass
class RunRecord:
    """One run directory as the report sees it.

    Args:
        dir: the run directory.
        variant: registered variant name (metrics.json run.variant, else config.json).
        seed: training seed (metrics.json run.seed, else config.json train.seed).
        dataset: config.json data.dataset (else metrics.json run.dataset).
        status: "ok" (evaluated) or "failed" (training failed, or not evaluated).
        error: why a failed run failed; None when ok.
        config, summary, metrics: parsed config.json, train_summary.json, eval/metrics.json
            (empty dicts / None when absent).
        notes: non-fatal remarks (for example "training still running").
        withheld: metric -> why the report leaves this run's value out of its column (scored
            with another version than the other runs; reports.columns decides).
    """

    dir: Path
    variant: str
    seed: Optional[int]
    dataset: str
    status: str
    error: Optional[str]
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    metrics: Optional[dict] = None
    notes: list[str] = field(default_factory=list)
    withheld: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def eval_dir(self) -> Path:
        return RunFolder(self.dir).eval

    @property
    def label(self) -> str:
        seed = "?" if self.seed is None else self.seed
        return f"{self.variant}/seed{seed}"

    def value(self, key: str) -> Optional[float]:
        """A number for the main table: a metric (or a metric's extra, e.g. kid_std; None when
        `withheld`), generator_params, images/s or peak memory."""
        metrics = self.metrics or {}
        run = metrics.get("run") or {}
        if key in metric_keys():
            value = None if owner(key) in self.withheld else (metrics.get("metrics") or {}).get(key)
        elif key == "generator_params":
            value = run.get("generator_params")
        elif key == "train_images_per_s":
            value = run.get("train_images_per_s", self.summary.get("images_per_s"))
        elif key == "train_peak_memory_gib":
            value = run.get("train_peak_memory_gib", self.summary.get("peak_memory_gib"))
        elif key in ("real_val_miou", "real_val_pixel_accuracy", "fid_train_vs_val"):
            value = (metrics.get("references") or {}).get(key)
        elif key in ("uniform_distinctness", "label_spread"):
            value = (metrics.get("label_dependence") or {}).get(key)
        else:
            raise KeyError(key)
        return _finite_or_none(value)

    @property
    def dataset_name(self) -> str:
        """How the report names the run's dataset: the format's name, or for a user's own data
        (a format whose files declare nothing, `folder`) the name of its root folder."""
        fmt = FORMATS.get(self.dataset)
        root = (self.config.get("data") or {}).get("root")
        if fmt is not None and fmt.suggest_flags and isinstance(root, str) and Path(root).expanduser().name:
            return Path(root).expanduser().name
        return self.dataset

    @property
    def degenerate(self) -> Optional[bool]:
        """metrics.json label_dependence.degenerate (None when not recorded)."""
        value = ((self.metrics or {}).get("label_dependence") or {}).get("degenerate")
        return None if value is None else bool(value)

    @property
    def released(self) -> bool:
        """Imported from NVlabs' released weights (metrics.json run.provenance.source)."""
        provenance = ((self.metrics or {}).get("run") or {}).get("provenance") or {}
        return isinstance(provenance, dict) and provenance.get("source") == "nvlabs"

    @property
    def code(self) -> str:
        """'<commit> (clean)' / '<commit> (dirty)' / 'not recorded', from metrics.json code."""
        code = (self.metrics or {}).get("code") or {}
        commit = code.get("commit")
        if not commit:
            return "not recorded"
        dirty = code.get("dirty")
        state = "dirty" if dirty else ("clean" if dirty is False else "dirty state not recorded")
        return f"{str(commit)[:12]} ({state})"

    def file(self, key: str) -> Optional[Path]:
        """Resolve metrics.json files.<key>: absolute, relative to eval/, or its name in eval/."""
        name = ((self.metrics or {}).get("files") or {}).get(key)
        if not name:
            return None
        path = Path(name)
        for candidate in (path, self.eval_dir / path, self.eval_dir / path.name):
            if candidate.is_file():
                return candidate
        return None

    def experiment(self) -> dict[str, Any]:
        """The experiment keys of config.json whose values differ from the defaults, but the
        training seed (`spade_bench.config.experiment_dict`): what makes seeds of one experiment."""
        if not self.config:
            return {}
        defaults = experiment_dict(RunConfig())
        return {k: v for k, v in experiment_dict(self.config).items()
                if k != "train.seed" and (k not in defaults or v != defaults[k])}

    def numerics(self) -> dict[str, dict]:
        """The numerics state recorded in env.json (training) and metrics.json (evaluation):
        their top-level "numerics" objects, {} where a record has none."""
        env = read_json_or_empty(RunFolder(self.dir).env)
        return {ENV: _mapping(env.get("numerics")), METRICS: _mapping((self.metrics or {}).get("numerics"))}

    def to_json(self) -> dict[str, Any]:
        return {"dir": str(self.dir), "variant": self.variant, "seed": self.seed,
                "dataset": self.dataset, "dataset_name": self.dataset_name, "status": self.status, "error": self.error,
                "notes": list(self.notes), "code": self.code, "released_weights": self.released,
                "degenerate": self.degenerate}


def _mapping(value: Any) -> dict:
    return dict(value) if isinstance(value, dict) else {}


def _finite_or_none(value: Any) -> Optional[float]:
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def is_run_dir(path: Path) -> bool:
    """Any of `run_folder.MARKERS` marks a folder as a run directory; the walk does not descend into one."""
    return RunFolder(path).is_run()


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Expand each path into run directories: a run dir itself, or the run dirs below it.

    Raises ReportError for a path that does not exist, or when no run directory is found.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ReportError("no RUNS given; pass run directories or their parent, e.g. runs/ablate-smoke")
    found: list[Path] = []
    for path in paths:
        if not path.exists():
            raise ReportError(f"{path} does not exist; pass run directories or their parent, "
                              f"e.g. runs/ablate-smoke")
        if not path.is_dir():
            raise ReportError(f"{path} is a file, not a run directory; pass the run folder "
                              f"(the one holding config.json and train_summary.json)")
        runs = _walk(path, depth=0)
        if not runs:
            raise ReportError(
                f"no run directories in {path} (searched {MAX_SEARCH_DEPTH} levels down): a run "
                f"directory holds config.json, train_summary.json or eval/metrics.json, as "
                f"written by `spade-bench train` and `spade-bench eval --run`")
        found.extend(runs)
    unique = sorted({p.resolve(): p for p in found}.items())
    return [p for _, p in unique]


def _walk(path: Path, depth: int) -> list[Path]:
    if is_run_dir(path):
        return [path]
    if depth >= MAX_SEARCH_DEPTH:
        return []
    runs: list[Path] = []
    for child in sorted(path.iterdir()):
        if child.is_dir() and not child.name.startswith(".") and child.name not in _NOT_RUNS:
            runs.extend(_walk(child, depth + 1))
    return runs


def load_run(run_dir: str | Path) -> RunRecord:
    """Read one run directory into a RunRecord; problems make it "failed", never raise."""
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    config, config_error = try_read_json(folder.config)
    summary, summary_error = try_read_json(folder.summary)
    metrics, metrics_error = try_read_json(folder.metrics)
    config, summary = config or {}, summary or {}
    run_meta = (metrics or {}).get("run") or {}

    variant = run_meta.get("variant") or config.get("variant") or run_dir.name
    seed = run_meta.get("seed", (config.get("train") or {}).get("seed"))
    seed = int(seed) if isinstance(seed, (int, float)) and not isinstance(seed, bool) else None
    dataset = (config.get("data") or {}).get("dataset") or run_meta.get("dataset") or "unknown"

    notes = [e for e in (config_error, summary_error) if e]
    status, error = "ok", None
    train_status = summary.get("status")
    if train_status == "failed":
        status = "failed"
        error = str(summary.get("error") or "training failed (train_summary.json gives no error)")
    elif metrics_error:
        status, error = "failed", metrics_error
    elif metrics is None:
        status = "failed"
        where = f"training status {train_status!r}" if train_status else "no train_summary.json"
        error = (f"not evaluated: {folder.metrics} is missing ({where}); "
                 f"run `spade-bench eval --run {run_dir}`")
    elif metrics.get("schema") != METRICS_SCHEMA:
        status = "failed"
        error = (f"{folder.metrics} has schema {metrics.get('schema')!r}; this "
                 f"report reads schema {METRICS_SCHEMA}; re-run `spade-bench eval --run {run_dir}`")
    elif not isinstance(metrics.get("metrics"), dict):
        status, error = "failed", f"{folder.metrics} has no 'metrics' object"
    elif problem := record_problem(folder.metrics, metrics, run_dir):
        status, error = "failed", problem
    elif stale := stale_scores(run_dir, config, summary, metrics):
        status, error = "failed", stale
    elif train_status not in (None, "finished"):
        notes.append(f"training status is {train_status!r}, not 'finished'; evaluated anyway")
    return RunRecord(dir=run_dir, variant=str(variant), seed=seed, dataset=str(dataset),
                     status=status, error=error, config=config, summary=summary,
                     metrics=metrics if status == "ok" else None, notes=notes)


# metrics.json's sections and the JSON type each has (docs/ARCHITECTURE.md, "Evaluation output").
_SECTION_TYPES = {"run": dict, "protocol": dict, "metrics": dict, "references": dict, "label_dependence": dict,
                  "files": dict, "code": dict, "per_class_iou": dict, "per_class_iou_real": dict,
                  "classes": dict, "sample_files": dict, "metric_warnings": dict, "warnings": list}


def _a(value: Any) -> str:
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def record_problem(path: Path, metrics: dict, run_dir: Path) -> Optional[str]:
    """What makes a metrics.json unusable (a section of the wrong JSON type, a score that is not a
    number), as one line naming the file and the key; None when it reads as the harness writes
    it. A hand-edited or foreign record is refused here, once, instead of failing wherever a
    table or a figure reads it."""
    again = f"it is not what spade-bench eval writes; score the run again: spade-bench eval --run {run_dir}"
    for key, kind in _SECTION_TYPES.items():
        value = metrics.get(key)
        if value is not None and not isinstance(value, kind):
            return f"{path}: {key!r} is {_a(value)}, not {'an object' if kind is dict else 'a list'}; {again}"
    versions = (metrics.get("protocol") or {}).get("metric_versions")
    if versions is not None and not isinstance(versions, dict):
        return f"{path}: 'protocol.metric_versions' is {_a(versions)}, not an object; {again}"
    step = metrics.get("checkpoint_step")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool)):
        return f"{path}: 'checkpoint_step' is {step!r}, not a step number; {again}"
    for key, value in metrics["metrics"].items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"{path}: 'metrics.{key}' is {value!r}, not a number or null; {again}"
    return None


def stale_scores(run_dir: Path, config: dict, summary: dict, metrics: dict) -> Optional[str]:
    """Why metrics.json does not score this run as it stands, or None. Its scores are refused
    (the run is listed as not evaluated, with this reason) when they are of another checkpoint
    step than the finished run's last (a run trained again into a folder with an old eval/),
    under another config than RUN/config.json (a config hash that is not config.json's, under
    the current rule or the one before it), or from other images than eval/images now holds
    (an evaluation killed after it started generating anew)."""
    folder = RunFolder(run_dir)
    again = f"score it again: spade-bench eval --run {run_dir}"
    step, trained = metrics.get("checkpoint_step"), summary.get("step")
    if summary.get("status") == "finished" and isinstance(trained, int) and step != trained:
        return (f"{folder.metrics} scores checkpoint step {step!r}, but the run trained to step {trained} "
                f"({folder.summary}); {again}")
    stored = (metrics.get("run") or {}).get("config_hash") if isinstance(metrics.get("run"), dict) else None
    if stored is not None and config and not hash_names_config(stored, config):
        return (f"{folder.metrics} was scored under another config (hash {stored!r}) than {folder.config} "
                f"(edited, or the run trained again since?); {again}")
    recorded = (metrics.get("protocol") or {}).get("generation_manifest_sha256") \
        if isinstance(metrics.get("protocol"), dict) else None
    manifest, _ = try_read_json(folder.generation_manifest)
    if recorded is not None and manifest is not None and \
            hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest() != recorded:
        return (f"{folder.metrics} was scored from other images than {folder.eval_images} now holds (an "
                f"evaluation stopped part way?); {again}")
    return None


def degenerate_counts(records: Iterable[RunRecord]) -> dict[str, tuple[int, int]]:
    """variant -> (seeds flagged degenerate, seeds with a label-dependence record), over the
    evaluated runs we trained (released weights are one model, not a seed)."""
    counts: dict[str, list[int]] = {}
    for record in records:
        if not record.ok or record.released or record.degenerate is None:
            continue
        flagged, seeds = counts.setdefault(record.variant, [0, 0])
        counts[record.variant] = [flagged + int(bool(record.degenerate)), seeds + 1]
    return {variant: (flagged, seeds) for variant, (flagged, seeds) in counts.items()}


def collect_runs(paths: Iterable[str | Path]) -> list[RunRecord]:
    """Find and read every run under `paths`, sorted by dataset, variant and seed."""
    records = [load_run(p) for p in find_run_dirs(paths)]
    return sorted(records, key=lambda r: (r.dataset, r.variant, -1 if r.seed is None else r.seed,
                                          str(r.dir)))


# --------------------------------------------------------------------------- per-image arrays

def load_counts(record: RunRecord) -> tuple[Optional[dict[str, np.ndarray]], Optional[str]]:
    """Per-image tp, fp, fn [N, K] from eval/per_image_counts.npz, or (None, why not)."""
    path = record.file("per_image_counts")
    if path is None:
        return None, f"{record.label}: per_image_counts.npz not found in {record.eval_dir}"
    try:
        with np.load(path) as data:
            counts = {k: np.asarray(data[k], dtype=np.float64) for k in ("tp", "fp", "fn")}
    except (OSError, KeyError, ValueError) as e:
        return None, f"{path}: cannot read tp/fp/fn ({e})"
    shapes = {k: v.shape for k, v in counts.items()}
    if len(set(shapes.values())) != 1 or counts["tp"].ndim != 2:
        return None, f"{path}: tp/fp/fn must share one [N, K] shape, got {shapes}"
    return counts, None


def load_fake_features(record: RunRecord) -> tuple[Optional[np.ndarray], Optional[str]]:
    path = record.file("fake_features")
    if path is None:
        return None, f"{record.label}: fake_features.npy not found in {record.eval_dir}"
    try:
        features = np.load(path)
    except (OSError, ValueError) as e:
        return None, f"{path}: cannot read ({e})"
    if features.ndim != 2:
        return None, f"{path}: expected [N, D] features, got shape {features.shape}"
    return features, None


_REAL_STATS_CACHE: dict[str, dict[str, np.ndarray]] = {}


def load_real_stats(record: RunRecord) -> tuple[Optional[dict[str, np.ndarray]], Optional[str]]:
    """The cached real statistics (mu, sigma and, when stored, features) named in metrics.json."""
    path = record.file("real_stats")
    if path is None:
        named = ((record.metrics or {}).get("files") or {}).get("real_stats")
        return None, f"{record.label}: real statistics {named!r} not found"
    key = str(path.resolve())
    if key not in _REAL_STATS_CACHE:
        try:
            with np.load(path) as data:
                stats = {k: np.asarray(data[k], dtype=np.float64) for k in data.files
                         if k in ("mu", "sigma", "features")}
        except (OSError, ValueError) as e:
            return None, f"{path}: cannot read ({e})"
        if "mu" not in stats or "sigma" not in stats:
            return None, f"{path}: needs arrays 'mu' and 'sigma', has {sorted(stats)}"
        _REAL_STATS_CACHE.clear()  # one dataset's statistics at a time (sigma is 32 MB)
        _REAL_STATS_CACHE[key] = stats
    return _REAL_STATS_CACHE[key], None
