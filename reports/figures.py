"""Figures of the ablation report (PNG, matplotlib's Agg canvas; no pyplot global state).

- samples: the same validation label maps rendered by every variant (rows = images, named
  by their validation file (metrics.json `sample_files`); columns = colour label | real
  photo | one column per variant, from its lowest seed), with a colour legend of the classes
  in the shown label maps, don't-care included (metrics.json `classes`).
- losses: training loss curves from logs/losses.jsonl, one panel per term: per variant
  the mean over seeds of a moving average (band: min to max over seeds); failed runs are
  drawn one by one, dashed (a divergence shows where it happened).
- metrics: a bar per variant for each main-table column, error bars = std over seeds (only
  for variants with 2 or more), with the real-photo reference (dashed) and the paper's value
  (x) where there is one; one legend below the panels, so it covers no line.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from reports.collect import RunRecord
from reports.tables import METRICS, variant_order
from spade_bench.io import atomic_write
from spade_bench.run_folder import RunFolder
from spade_bench.metrics import list_metrics

_DPI = 110
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
            "#17becf", "#bcbd22", "#7f7f7f")


def variant_colours(variants: Sequence[str]) -> dict[str, str]:
    """One fixed colour per variant, the same in every figure."""
    return {v: _PALETTE[i % len(_PALETTE)] for i, v in enumerate(variant_order(variants))}


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    # Constrained layout already fits the panels; "tight" would render the figure twice.
    fig.savefig(buffer, format="png", dpi=_DPI,
                bbox_inches=None if fig.get_layout_engine() is not None else "tight")
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return path


# --------------------------------------------------------------------------- samples

def _load_png(path: Path) -> Optional[np.ndarray]:
    from PIL import Image
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError):
        return None


def _representative_runs(records: Sequence[RunRecord]) -> dict[str, Optional[RunRecord]]:
    """Per variant, its evaluated run with the lowest seed (None when all failed)."""
    out: dict[str, Optional[RunRecord]] = {}
    for variant in variant_order([r.variant for r in records]):
        ok = [r for r in records if r.variant == variant and r.ok]
        out[variant] = min(ok, key=lambda r: (r.seed is None, r.seed or 0)) if ok else None
    return out


def sample_grid(records: Sequence[RunRecord], path: Path, num_images: int = 4) -> Optional[Path]:
    """Rows = the first validation images; columns = label | real | each variant. None if no images."""
    runs = _representative_runs(records)
    sources = [r for r in runs.values() if r is not None and (r.eval_dir / "images").is_dir()]
    if not sources:
        return None
    names = sorted(p.name for p in (sources[0].eval_dir / "images").glob("*.png"))[:num_images]
    if not names:
        return None
    columns = ["label", "real"] + list(runs)
    first = _load_png(sources[0].eval_dir / "images" / names[0])
    aspect = first.shape[0] / first.shape[1] if first is not None else 1.0
    # About one screen pixel per image pixel, within limits that keep the grid legible.
    cell = float(np.clip((first.shape[1] if first is not None else 0) / _DPI, 1.6, 3.0))
    fig = Figure(figsize=(cell * len(columns), cell * aspect * len(names) + 0.5))
    axes = fig.subplots(len(names), len(columns), squeeze=False)
    for row, name in enumerate(names):
        for col, column in enumerate(columns):
            ax = axes[row][col]
            ax.set_xticks([])
            ax.set_yticks([])
            if column in ("label", "real"):
                folder = "labels" if column == "label" else "real"
                image = next((img for img in (_load_png(r.eval_dir / folder / name) for r in sources)
                              if img is not None), None)
                text = "missing"
            else:
                run = runs[column]
                image = _load_png(run.eval_dir / "images" / name) if run else None
                text = "failed" if run is None else "missing"
            if image is None:
                # A grey image of the same shape keeps every cell of the grid the same size.
                shape = first.shape if first is not None else (32, 32, 3)
                ax.imshow(np.full(shape, 221, dtype=np.uint8))
                ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes,
                        color="#aa0000" if text == "failed" else "#444444", fontsize=10)
            else:
                ax.imshow(image, interpolation="nearest")
            if row == 0:
                run = runs.get(column)
                title = column if column in ("label", "real") or run is None else \
                    f"{column}\n(seed {run.seed})"
                ax.set_title(title, fontsize=9)
            if col == 0:
                ax.set_ylabel(_row_label(sources[0], name), fontsize=8)
    legend = _label_legend(sources, names)
    if legend:
        fig.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncols=min(len(legend), 4),
                   fontsize=8, frameon=False, title="label colours", title_fontsize=8)
    fig.subplots_adjust(wspace=0.03, hspace=0.03)
    return _save(fig, path)


def _row_label(record: RunRecord, name: str) -> str:
    """A sample row's name: the stem of the validation file it renders (metrics.json
    `sample_files`), else the stored image's number."""
    source = ((record.metrics or {}).get("sample_files") or {}).get(name)
    if not isinstance(source, str):
        return Path(name).stem
    if source.startswith("synthetic/"):
        return "scene " + source.rsplit("/", 1)[-1]
    stem = Path(source).stem
    return stem if len(stem) <= 18 else stem[:8] + "…" + stem[-9:]


def _label_legend(sources: Sequence[RunRecord], names: Sequence[str]) -> list:
    """Patches for the classes whose colours occur in the shown label maps, don't-care included."""
    legend = next((c for c in ((r.metrics or {}).get("classes") for r in sources)
                   if isinstance(c, dict) and isinstance(c.get("colours"), list)), None)
    if legend is None:
        return []
    seen: set[str] = set()
    for name in names:
        image = next((img for img in (_load_png(r.eval_dir / "labels" / name) for r in sources) if img is not None),
                     None)
        if image is not None:
            seen.update("#{:02x}{:02x}{:02x}".format(*c) for c in np.unique(image.reshape(-1, 3), axis=0))
    entries = [(f"{i} {n}", c) for i, (n, c) in enumerate(zip(legend.get("names") or [], legend["colours"]))]
    dont_care = legend.get("dont_care")
    if isinstance(dont_care, dict) and dont_care.get("colour"):
        entries.append((f"{dont_care.get('name', 'dont-care')} (don't-care, not scored)", dont_care["colour"]))
    return [Patch(facecolor=colour, edgecolor="black", linewidth=0.5, label=label)
            for label, colour in entries if str(colour).lower() in seen]


# --------------------------------------------------------------------------- loss curves

def read_losses(record: RunRecord) -> Optional[pd.DataFrame]:
    """logs/losses.jsonl as a frame sorted by step; unreadable lines (a crash mid-write) skipped,
    D/total derived from D/real + D/fake when absent."""
    path = RunFolder(record.dir).losses
    if not path.is_file():
        return None
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    if not rows:
        return None
    # A resumed run logs some steps again: keep the latest. A diverged run logs inf: a gap.
    frame = (pd.DataFrame(rows).drop_duplicates("step", keep="last").sort_values("step")
             .replace([np.inf, -np.inf], np.nan))
    if "D/total" not in frame and {"D/real", "D/fake"} <= set(frame.columns):
        frame["D/total"] = frame["D/real"] + frame["D/fake"]
    return frame


def loss_terms(frames: Sequence[pd.DataFrame]) -> list[str]:
    """G/total, D/total, then each G term, then D/real and D/fake (those present)."""
    present = set().union(*(f.columns for f in frames))
    generator_terms = sorted(c for c in present if c.startswith("G/") and c != "G/total")
    ordered = ["G/total", "D/total"] + generator_terms + ["D/real", "D/fake"]
    return [t for t in ordered if t in present]


def smooth(values: pd.Series) -> pd.Series:
    """Centred moving average over about 1/15 of the points (none for short logs)."""
    window = max(1, round(len(values) / 15))
    return values.rolling(window, min_periods=1, center=True).mean()


def _variant_curve(frames: Sequence[pd.DataFrame], term: str) -> Optional[pd.DataFrame]:
    """Mean, min and max over runs of the smoothed curves, on the union of their steps."""
    curves = [pd.Series(smooth(f[term]).to_numpy(), index=f["step"].to_numpy())
              .groupby(level=0).mean() for f in frames if term in f and f[term].notna().any()]
    if not curves:
        return None
    table = pd.concat(curves, axis=1).sort_index().interpolate(limit_area="inside")
    return pd.DataFrame({"mean": table.mean(axis=1), "min": table.min(axis=1),
                         "max": table.max(axis=1)})


def _markers(points: int) -> dict:
    """Dots on short logs: one logged step draws no line at all."""
    return {"marker": "o", "markersize": 4} if points <= 30 else {}


def loss_curves(records: Sequence[RunRecord], path: Path) -> Optional[Path]:
    """One panel per loss term: per variant the mean over its evaluated seeds (band: min to
    max over seeds); failed runs drawn one by one, dashed. None without logs."""
    frames = [(r, f) for r in records if (f := read_losses(r)) is not None]
    if not frames:
        return None
    terms = loss_terms([f for _, f in frames])
    if not terms:
        return None
    colours = variant_colours([r.variant for r in records])
    ncols = min(3, len(terms))
    nrows = math.ceil(len(terms) / ncols)
    fig = Figure(figsize=(4.6 * ncols, 3.1 * nrows + 0.6), constrained_layout=True)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    legend: dict[str, object] = {}
    for ax, term in zip(axes, terms):
        for variant in variant_order([r.variant for r, _ in frames]):
            ok = [f for r, f in frames if r.variant == variant and r.ok]
            curve = _variant_curve(ok, term) if ok else None
            if curve is not None:
                seeds = f" ({len(ok)} seeds)" if len(ok) > 1 else ""
                (line,) = ax.plot(curve.index, curve["mean"], color=colours[variant], linewidth=1.4,
                                  **_markers(len(curve)))
                legend.setdefault(variant + seeds, line)
                if len(ok) > 1:
                    ax.fill_between(curve.index, curve["min"], curve["max"], color=colours[variant],
                                    alpha=0.15, linewidth=0)
            for record, frame in frames:
                if record.variant == variant and not record.ok and term in frame:
                    data = frame[["step", term]].dropna()
                    (line,) = ax.plot(data["step"], smooth(data[term]), color=colours[variant],
                                      linestyle="--", linewidth=1.2, **_markers(len(data)))
                    legend.setdefault(f"{variant} (failed)", line)
        ax.set_title(term, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[len(terms):]:
        ax.set_visible(False)
    fig.legend(list(legend.values()), list(legend), loc="outside upper center",
               ncols=min(len(legend), 5), fontsize=9)
    return _save(fig, path)


# --------------------------------------------------------------------------- metric bars

# metric -> (its metrics.json reference, the line's label), from the metrics' declarations.
# In the figure's one legend the line says which bound it is ("real val photos (ceiling)").
_REFERENCE_LINE = {m.name: (m.reference.key, f"{m.reference.line} ({m.reference.bound})")
                   for m in list_metrics() if m.reference is not None}


def metric_bars(table: pd.DataFrame, references: Mapping[str, dict], path: Path,
                real_set: Optional[str] = "val") -> Path:
    """A panel per main-table column: bars = mean over seeds, error bars = std over seeds.
    `real_set`: protocol.real_set, named in the FID floor's line."""
    return _save(metric_bars_figure(table, references, real_set), path)


def metric_bars_figure(table: pd.DataFrame, references: Mapping[str, dict],
                       real_set: Optional[str] = "val") -> Figure:
    """`metric_bars`' figure: error bars only where a variant has 2 or more seeds (one seed has
    no spread to show), and one legend below the panels, where it covers no bar or line."""
    variants = list(table.index)
    colours = variant_colours(variants)
    ncols = 4
    nrows = math.ceil(len(METRICS) / ncols)
    width = max(3.2, 0.45 * len(variants) + 1.2)
    fig = Figure(figsize=(width * ncols, 3.3 * nrows), constrained_layout=True)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    x = np.arange(len(variants))
    legend: dict[str, object] = {}
    for ax, spec in zip(axes, METRICS):
        means = table[f"{spec.key}_mean"].to_numpy() * spec.scale
        stds = table[f"{spec.key}_std"].to_numpy() * spec.scale
        ax.bar(x, np.nan_to_num(means), color=[colours[v] for v in variants], edgecolor="black", linewidth=0.5)
        spread = (table[f"{spec.key}_n"].to_numpy() >= 2) & np.isfinite(stds) & np.isfinite(means)
        if spread.any():
            ax.errorbar(x[spread], means[spread], yerr=stds[spread], fmt="none", ecolor="black", capsize=3,
                        linewidth=1)
        for i, variant in enumerate(variants):
            if table.loc[variant, "ok"] == 0:
                ax.text(i, 0, "failed", rotation=90, ha="center", va="bottom", color="#aa0000",
                        fontsize=8)
        if spec.key in _REFERENCE_LINE:
            key, label = _REFERENCE_LINE[spec.key]
            value = references.get(key, {}).get("mean")
            if value is not None:
                ax.axhline(value * spec.scale, color="black", linestyle="--", linewidth=1,
                           label=label.format(real_set=real_set or "val"))
        paper_key = f"paper_{spec.key}"
        if paper_key in table and table[paper_key].notna().any():
            ax.scatter(x, table[paper_key].to_numpy() * spec.scale, marker="x", color="black",
                       s=40, zorder=3, label="paper")
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
        arrow = {"higher": " (higher is better)", "lower": " (lower is better)"}.get(spec.better, "")
        ax.set_title(spec.label + arrow, fontsize=9)
        labels = [f"{v} (n={int(n)}" + (f", {int(failed)} failed)" if failed else ")")
                  for v, n, failed in zip(variants, table[f"{spec.key}_n"], table["failed"])]
        ax.set_xticks(x, labels, rotation=35, ha="right", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(METRICS):]:
        ax.set_visible(False)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="outside lower center", ncols=min(len(legend), 3),
                   fontsize=8)
    return fig
