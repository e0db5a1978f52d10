"""The report's learning curves: the scored metric at a few checkpoints per variant (each run's
RUN/eval/curve.json, written by eval/curve.py with eval.curve_points), with the evaluator's
ceiling or floor on the same figure, so a reader can see whether the ranking still moves.

A point is drawn only when it was scored under the protocol of the run's final evaluation
(the keys curve.json records per point against metrics.json's protocol); others are left out
with a note, as are the curve steps a run has no checkpoint for.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from reports.collect import RunRecord
from reports.figures import _save, variant_colours
from reports.tables import to_markdown, variant_order
from spade_bench.metrics import get_metric, list_metrics, metric_names
from spade_bench.run_folder import RunFolder, read_json_or_empty

PRIMARY = "miou"


def collect_points(records: Sequence[RunRecord]) -> tuple[pd.DataFrame, list[str]]:
    """(rows variant, seed, run, step, metric, value over the evaluated runs' curves, notes on
    what was left out). Released weights have no training curve."""
    rows, notes = [], []
    for record in records:
        if not record.ok or record.released:
            continue
        curve = read_json_or_empty(RunFolder(record.dir).curve)
        if not isinstance(curve.get("points"), list):
            continue
        final = ((record.metrics or {}).get("protocol") or {})
        for step, why in (curve.get("missing") or {}).items():
            notes.append(f"{record.label} step {step}: {why}")
        for point in curve["points"]:
            if not isinstance(point, dict) or not isinstance(point.get("step"), int):
                continue
            shared = point.get("protocol") if isinstance(point.get("protocol"), dict) else {}
            differ = sorted(k for k, v in shared.items() if final.get(k) != v)
            if differ:
                notes.append(f"{record.label} step {point['step']}: scored under another {', '.join(differ)} "
                             f"than the run's final evaluation; left out")
                continue
            for name, value in (point.get("metrics") or {}).items():
                if name in metric_names() and isinstance(value, (int, float)) and math.isfinite(value):
                    rows.append({"variant": record.variant, "seed": record.seed, "run": record.label,
                                 "step": point["step"], "metric": name, "value": float(value)})
    frame = pd.DataFrame(rows, columns=["variant", "seed", "run", "step", "metric", "value"])
    return frame, notes


def _metrics(frame: pd.DataFrame) -> list[str]:
    present = set(frame["metric"])
    return [m.name for m in list_metrics() if m.name in present]


def _means(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """variant x step: mean over seeds (NaN where a variant has no point)."""
    chosen = frame[frame["metric"] == metric]
    return chosen.pivot_table(index="variant", columns="step", values="value", aggfunc="mean")


def curve_means(frame: pd.DataFrame) -> dict[str, dict[str, dict[int, float]]]:
    """metric -> variant -> {step: mean over seeds}: the points `reports.paper.training_gap` reads."""
    out: dict[str, dict[str, dict[int, float]]] = {}
    for metric in _metrics(frame):
        means = _means(frame, metric)
        out[metric] = {variant: {int(step): float(v) for step, v in row.items() if not math.isnan(v)}
                       for variant, row in means.iterrows()}
    return out


def _ranking(means: pd.Series, metric: str) -> list[str]:
    higher = get_metric(metric).direction == "higher"
    return list(means.dropna().sort_values(ascending=not higher).index)


def learning_curves(frame: pd.DataFrame, references: Mapping[str, dict], path: Path,
                    real_set: Optional[str] = "val") -> Optional[Path]:
    """A panel per curve metric: per variant each seed's points and the mean over seeds (line)
    against the training step; the metric's reference (the segmenter's ceiling on real photos,
    the FID floor of real train photos) dashed. None when no run has a curve."""
    if frame.empty:
        return None
    metrics = _metrics(frame)
    colours = variant_colours(list(frame["variant"]))
    fig = Figure(figsize=(4.6 * len(metrics), 3.6), constrained_layout=True)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, name in zip(axes, metrics):
        metric = get_metric(name)
        chosen = frame[frame["metric"] == name]
        for variant in variant_order(list(chosen["variant"])):
            own = chosen[chosen["variant"] == variant]
            ax.scatter(own["step"], own["value"] * metric.scale, color=colours[variant], s=14, alpha=0.45,
                       linewidths=0)
            mean = own.groupby("step")["value"].mean() * metric.scale
            ax.plot(mean.index, mean.to_numpy(), color=colours[variant], marker="o", markersize=4,
                    linewidth=1.6, label=f"{variant} (n={own['run'].nunique()})")
        if metric.reference is not None:
            value = (references.get(metric.reference.key) or {}).get("mean")
            if value is not None:
                ax.axhline(value * metric.scale, color="black", linestyle="--", linewidth=1,
                           label=f"{metric.reference.line.format(real_set=real_set or 'val')} "
                                 f"({metric.reference.bound})")
        arrow = {"higher": " (higher is better)", "lower": " (lower is better)"}.get(metric.direction, "")
        ax.set_title(metric.label + arrow, fontsize=9)
        ax.set_xlabel("training step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def curves_markdown(frame: pd.DataFrame, notes: Sequence[str], references: Mapping[str, dict]) -> list[str]:
    """The "### Learning curves" lines: the steps, the primary metric's means by step, and whether
    the ranking still moves between the last two points."""
    lines = ["### Learning curves", ""]
    if frame.empty:
        return lines + ["No learning curve was scored (set `eval.curve_points=N` to score N checkpoints "
                        "of every run with the final evaluation's protocol).", ""]
    metrics = _metrics(frame)
    name = PRIMARY if PRIMARY in metrics else metrics[0]
    metric = get_metric(name)
    means = _means(frame, name)
    counts = frame[frame["metric"] == name].pivot_table(index="variant", columns="step", values="value",
                                                        aggfunc="count")
    steps = list(means.columns)
    table = pd.DataFrame(
        [[variant] + ["–" if math.isnan(means.loc[variant, s]) else
                      f"{means.loc[variant, s] * metric.scale:.{metric.digits}f} ({int(counts.loc[variant, s])})"
                      for s in steps] for variant in variant_order(list(means.index))],
        columns=["variant"] + [f"step {s}" for s in steps])
    lines += [f"{metric.label} at {len(steps)} checkpoints per run (mean over seeds, seeds in brackets), each "
              f"scored with the final evaluation's protocol (the same validation images, generation seeds and "
              f"evaluator; eval/curve.py); the figure shows every seed.", "", to_markdown(table), ""]
    if len(steps) >= 2:
        before, last = _ranking(means[steps[-2]], name), _ranking(means[steps[-1]], name)
        order = " > " if metric.direction == "higher" else " < "
        moved = [v for v in means.index if not math.isnan(means.loc[v, steps[-1]])
                 and not math.isnan(means.loc[v, steps[-2]])]
        deltas = {v: (means.loc[v, steps[-1]] - means.loc[v, steps[-2]]) * metric.scale for v in moved}
        change = ", ".join(f"{v} {deltas[v]:+.{metric.digits}f}" for v in variant_order(moved))
        if before == last:
            verdict = "unchanged over the last two points"
        else:
            verdict = ("**changed** over the last two points: the ranking still moves, so a longer run could "
                       "change the comparison")
        lines += [f"Ranking by mean {metric.short} at step {steps[-2]}: {order.join(before)}; at step {steps[-1]}: "
                  f"{order.join(last)} ({verdict}). Change over the last interval: {change}.", ""]
    if metric.reference is not None and (references.get(metric.reference.key) or {}).get("mean") is not None:
        value = references[metric.reference.key]["mean"] * metric.scale
        lines += [f"Dashed in the figure: the evaluator's {metric.reference.bound} for {metric.short}, "
                  f"{value:.{metric.digits}f} (metrics.json `references.{metric.reference.key}`); points beyond it "
                  f"cannot be ranked by this evaluator.", ""]
    if notes:
        lines += ["Points not drawn:", ""] + [f"- {note}" for note in notes] + [""]
    return lines


def curves_summary(frame: pd.DataFrame, notes: Sequence[str]) -> dict[str, Any]:
    """summary.json `learning_curves`: {metric: {variant: {step: {"mean", "values"}}}, "notes"}."""
    out: dict[str, Any] = {}
    for name in _metrics(frame):
        chosen = frame[frame["metric"] == name]
        out[name] = {variant: {str(step): {"mean": float(np.mean(group["value"])),
                                           "values": json.loads(group[["run", "value"]].to_json(orient="values"))}
                               for step, group in own.groupby("step")}
                     for variant, own in chosen.groupby("variant")}
    return {"metrics": out, "notes": list(notes)}
