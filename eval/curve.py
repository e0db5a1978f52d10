"""Learning curves: the scored metric at a few checkpoints of a run, so a report can show
whether the ranking still moves (issue 20, item 6).

`eval.curve_points: N` puts N checkpoints evenly spaced over training on the curve
(`spade_bench.checkpoint.curve_steps`: round(k x train.steps / N), k = 1..N, the last being the
final step); the trainer writes them and never prunes them. `score_curve` scores each with
`eval.curve_metrics` (default mIoU, whose group brings pixel accuracy: a generation and a
segmenter pass per point; the Inception features at 299 px are what makes FID costly) through
the evaluation harness itself, into RUN/eval/curve/step_XXXXXXX/ (laid out as RUN/eval/): the
same images, seeds, segmenter and settings as the final evaluation, so each point is recorded
with the full protocol. The final step reuses RUN/eval/metrics.json when that scores it.

RUN/eval/curve.json sums them up:
    {"schema": 1, "points_requested": N, "steps": [...], "metrics": ["miou", "pixel_accuracy"],
     "points": [{"step", "record": "curve/step_0000100/metrics.json" or "metrics.json",
                 "metrics": {name: value}, "references": {key: value},
                 "protocol": {key: value}}],           # the keys the curve metrics depend on
     "missing": {"100": "why no point"}}
A point whose record already scores its checkpoint (same step and config, every curve metric at
this code's version, the same protocol as metrics.json) is not scored again, so a relaunched
sweep recomputes nothing that is finished. A curve step without its checkpoint (trained before
eval.curve_points was set, or pruned) is listed under "missing", never dropped silently.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import spade_bench.checkpoint as checkpoints
from eval.harness import evaluate_run
from spade_bench.config import apply_overrides, config_hash, load_config_file
from spade_bench.errors import EvalError
from spade_bench.io import atomic_write_json
from spade_bench.locks import folder_lock
from spade_bench.metrics import COMMON_PROTOCOL_KEYS, get_metric, resolve_request, unscored
from spade_bench.run_folder import RunFolder, read_json_or_empty

SCHEMA = 1
# Protocol keys every curve point shares with the final evaluation, besides the metrics' own.
_SHARED_KEYS = ("eval_subset_sha256", "seeds", "generation_size")


def curve_metric_names(request: str) -> list[str]:
    """The metrics an eval.curve_metrics request scores (with their groups), in column order."""
    try:
        return resolve_request(request)
    except Exception as e:  # noqa: BLE001 - the registry's message, as the config key's error
        raise EvalError(f"eval.curve_metrics={request!r}: {e}") from None


def protocol_keys(names: list[str]) -> list[str]:
    """The protocol keys the curve metrics' values depend on: what every point must share."""
    keys = list(COMMON_PROTOCOL_KEYS) + list(_SHARED_KEYS)
    for name in names:
        keys += [k for k in get_metric(name).protocol_keys if k not in keys]
    return keys


def _shared_protocol(record: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    protocol = record.get("protocol") if isinstance(record.get("protocol"), dict) else {}
    return {k: protocol.get(k) for k in keys}


def point_is_scored(record: dict[str, Any], step: int, cfg_hash: str, names: list[str], keys: list[str],
                    final: Optional[dict[str, Any]]) -> bool:
    """A record scores the curve point at `step`: that checkpoint, this config, every curve metric
    at this code's version and, when the final evaluation exists, its protocol."""
    run = record.get("run") if isinstance(record.get("run"), dict) else {}
    if record.get("checkpoint_step") != step or run.get("config_hash") != cfg_hash:
        return False
    if set(unscored(record)) & set(names):
        return False
    return not final or _shared_protocol(record, keys) == _shared_protocol(final, keys)


def _plan(run_dir: Path, points: int, request: str) -> tuple[Any, list[int], list[str], list[str]]:
    folder = RunFolder(run_dir)
    if not folder.config.is_file():
        raise EvalError(f"{run_dir} is not a run directory (no {folder.config.name})")
    cfg = load_config_file(folder.config)
    names = curve_metric_names(request)
    return cfg, checkpoints.curve_steps(cfg.train.steps, points), names, protocol_keys(names)


def points_to_score(run_dir: str | Path, points: int, request: str = "miou") -> list[int]:
    """The curve steps that have a checkpoint but no record scoring them (reads JSON only)."""
    run_dir = Path(run_dir)
    if points <= 0:
        return []
    cfg, steps, names, keys = _plan(run_dir, points, request)
    folder, cfg_hash = RunFolder(run_dir), config_hash(cfg)
    final = read_json_or_empty(folder.metrics)
    todo = []
    for step in steps:
        if step == cfg.train.steps and point_is_scored(final, step, cfg_hash, names, keys, None):
            continue
        record = read_json_or_empty(folder.curve_point(step) / folder.metrics.name)
        if not point_is_scored(record, step, cfg_hash, names, keys, final) and \
                checkpoints.step_path(run_dir, step).is_file():
            todo.append(step)
    return todo


def score_curve(run_dir: str | Path, points: int, *, metric: str = "miou", overrides: Optional[list[str]] = None,
                device: str = "auto", progress: bool = True, break_lock: bool = False) -> dict[str, Any]:
    """Score the learning curve of a run at `points` checkpoints (those not scored yet) and write
    RUN/eval/curve.json; returns its content. `overrides`: eval.* settings, as for evaluate_run
    (the sweep passes its segmenter). Holds the evaluation folder's lock (RUN/eval/.lock, as
    `evaluate_run` does) throughout, so that no other evaluation rewrites metrics.json, which the
    final point may reuse, while the curve is read and written; `break_lock` clears a stale one."""
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    with folder_lock(folder.eval_lock, "evaluation folder", break_lock=break_lock):
        return _score_curve(run_dir, folder, points, metric, overrides, device, progress)


def _score_curve(run_dir: Path, folder: RunFolder, points: int, metric: str, overrides: Optional[list[str]],
                 device: str, progress: bool) -> dict[str, Any]:
    cfg, steps, names, keys = _plan(run_dir, points, metric)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    cfg_hash = config_hash(cfg)
    todo = set(points_to_score(run_dir, points, metric))
    final = read_json_or_empty(folder.metrics)
    entries, missing = [], {}
    for step in steps:
        out = folder.curve_point(step)
        if step == cfg.train.steps and point_is_scored(final, step, cfg_hash, names, keys, None):
            record, where = final, folder.metrics.name
        elif step in todo:
            record = evaluate_run(run_dir, metric=",".join(names), checkpoint=str(step), device=device,
                                  overrides=overrides, progress=progress, out=out)
            where = f"{out.relative_to(folder.eval).as_posix()}/{folder.metrics.name}"
        else:
            record = read_json_or_empty(out / folder.metrics.name)
            where = f"{out.relative_to(folder.eval).as_posix()}/{folder.metrics.name}"
            if not point_is_scored(record, step, cfg_hash, names, keys, final):
                missing[str(step)] = (f"no checkpoint {checkpoints.step_path(run_dir, step).name}: trained before "
                                      f"eval.curve_points was set, or pruned (train.keep_checkpoints)")
                continue
        references = record.get("references") or {}
        entries.append({
            "step": step, "record": where,
            "metrics": {k: (record.get("metrics") or {}).get(k) for k in names},
            "references": {m.reference.key: references.get(m.reference.key)
                           for m in map(get_metric, names) if m.reference is not None},
            "protocol": _shared_protocol(record, keys)})
    curve = {"schema": SCHEMA, "points_requested": points, "steps": steps, "metrics": names,
             "points": entries, "missing": missing}
    atomic_write_json(folder.curve, curve)
    return curve
