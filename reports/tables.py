"""Tables of the ablation report: numbers in pandas, rendered as Markdown, LaTeX and CSV.

Main table: one row per variant, each cell the mean +- std over its evaluated seeds
(sample std, ddof 1; no std with one seed). The metric columns are the registered metrics
(spade_bench.metrics), each marked best in its declared direction (higher mIoU, lower FID,
...); then training images/s (higher) and peak memory (lower). Best is decided on the values
as shown: every variant tied at the shown precision is marked, none when all tie. Generator
parameters are not marked: size is a design choice, not a score. Failed runs count in
the "seeds" column and never in a mean. Reference rows give the segmenter on real
photos (the mIoU ceiling) and real training vs the real set FID compares with (validation
or test photos, protocol.real_set: the FID floor); a mean
beyond them is marked † ("beyond the evaluator's resolution"), and a variant with runs
flagged degenerate in metrics.json says so beside its name. Paper columns sit beside ours
where the dataset is one of the paper's; with NVlabs released-weights runs, each metric
has paper | released weights, re-scored | retrained columns.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from reports.bootstrap import BASELINE, MIN_SEEDS_FOR_VERDICT, Interval, bootstrap_metrics
from reports.collect import RunRecord
from reports.paper import PUBLISHED, PUBLISHED_METRICS, published
from spade_bench.metrics import get_metric, list_metrics


@dataclass(frozen=True)
class MetricSpec:
    """A main-table column.

    Args:
        key: RunRecord.value key.
        label: column label (plain text; LaTeX label in `latex`).
        better: "higher", "lower" or None (not marked).
        digits: decimals shown (after `scale`).
        scale: shown value = raw value * scale (KID x 10^3, parameters in millions).
        interval_digits: decimals of a difference and its interval (default digits + 1).
    """

    key: str
    label: str
    latex: str
    better: Optional[str]
    digits: int
    scale: float = 1.0
    interval_digits: Optional[int] = None


# The registered metrics (their declarations), then what the run itself records.
METRIC_COLUMNS = tuple(MetricSpec(m.name, m.label, m.latex, m.direction, m.digits, m.scale, m.interval_digits)
                       for m in list_metrics())
RUN_COLUMNS = (
    MetricSpec("generator_params", "G params (M)", "G params (M)", None, 2, 1e-6),
    MetricSpec("train_images_per_s", "train images/s", "images/s", "higher", 1),
    MetricSpec("train_peak_memory_gib", "peak memory (GiB)", "memory (GiB)", "lower", 2),
)
METRICS = METRIC_COLUMNS + RUN_COLUMNS
SPECS = {spec.key: spec for spec in METRICS}
REFERENCE_KEYS = tuple(m.reference.key for m in list_metrics() if m.reference is not None)


def variant_order(variants: Sequence[str]) -> list[str]:
    """spade first (everything is compared with it), then the others alphabetically."""
    unique = sorted(set(variants))
    return ([BASELINE] if BASELINE in unique else []) + [v for v in unique if v != BASELINE]


# --------------------------------------------------------------------------- numbers

# Reference -> (metric, direction): a variant's mean beyond it is beyond the evaluator's
# resolution (scores above what the segmenter achieves on real photos, FIDs below real
# train vs val (or test) photos cannot be ranked by this evaluator).
RESOLUTION_LIMITS = {m.reference.key: (m.name, "above" if m.reference.bound == "ceiling" else "below")
                     for m in list_metrics() if m.reference is not None}
# Metrics that get a "released weights, re-scored" column beside "retrained".
RELEASED_METRICS = tuple(spec.key for spec in METRIC_COLUMNS)


def _aggregate(row: dict, prefix: str, runs: Sequence[RunRecord], key: str) -> None:
    values = np.array([v for v in (r.value(key) for r in runs) if v is not None])
    row[f"{prefix}{key}_n"] = len(values)
    row[f"{prefix}{key}_mean"] = float(values.mean()) if len(values) else math.nan
    row[f"{prefix}{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan


def main_table(records: Sequence[RunRecord], dataset: str,
               references: Optional[Mapping[str, dict]] = None) -> pd.DataFrame:
    """Numbers per variant: runs, ok, failed, seeds; <metric>_mean/_std/_n/_best/_beyond;
    paper_<metric>; released (NVlabs weights re-scored) and released_<metric>_mean;
    degenerate (runs flagged), uniform_distinctness and label_spread.

    Released-weights runs are never averaged with retrained ones: "ok", "seeds" and the
    <metric> columns count retrained runs only. `references`: `reference_values(records)`
    when the caller has it already.
    """
    references = reference_values(records) if references is None else references
    rows = []
    for variant in variant_order([r.variant for r in records]):
        runs = [r for r in records if r.variant == variant and not r.released]
        released = [r for r in records if r.variant == variant and r.released and r.ok]
        ok = [r for r in runs if r.ok]
        row: dict = {"variant": variant, "runs": len(runs), "ok": len(ok),
                     "failed": len(runs) - len(ok), "released": len(released),
                     "seeds": " ".join(str(r.seed) for r in ok),
                     "degenerate": sum(bool(r.degenerate) for r in ok),
                     "degenerate_known": sum(r.degenerate is not None for r in ok)}
        for spec in METRICS:
            _aggregate(row, "", ok, spec.key)
        for key in ("uniform_distinctness", "label_spread"):
            _aggregate(row, "", ok, key)
        for metric in RELEASED_METRICS:
            _aggregate(row, "released_", released, metric)
        for metric in PUBLISHED_METRICS:
            value = published(dataset, variant, metric)
            row[f"paper_{metric}"] = math.nan if value is None else value
        for spec in METRICS:
            row[f"{spec.key}_beyond"] = False
        for reference, (metric, direction) in RESOLUTION_LIMITS.items():
            limit, mean = references[reference]["mean"], row[f"{metric}_mean"]
            if limit is not None and not math.isnan(mean):
                row[f"{metric}_beyond"] = mean > limit if direction == "above" else mean < limit
        rows.append(row)
    table = pd.DataFrame(rows).set_index("variant")
    for spec in METRICS:
        table[f"{spec.key}_best"] = best_marks(table[f"{spec.key}_mean"], spec)
    return table


def best_marks(means: pd.Series, spec: MetricSpec) -> pd.Series:
    """Which means are best in the column's direction, compared as the table shows them (after
    scale, at `digits` decimals): every variant tied for best is marked, and none when all tie
    (nothing is better). Unmarked columns (better None) and single values mark nothing."""
    best = pd.Series(False, index=means.index)
    shown = (means * spec.scale).round(spec.digits)
    if not spec.better or shown.notna().sum() < 2:
        return best
    target = shown.max() if spec.better == "higher" else shown.min()
    best = shown == target
    return best if best.sum() < shown.notna().sum() else pd.Series(False, index=means.index)


def beyond_resolution(table: pd.DataFrame, references: Mapping[str, dict],
                      real_set: Optional[str] = "val") -> dict[str, dict[str, str]]:
    """variant -> metric -> why its mean is beyond the evaluator's resolution."""
    out: dict[str, dict[str, str]] = {}
    for reference, (metric, direction) in RESOLUTION_LIMITS.items():
        limit = references.get(reference, {}).get("mean")
        for variant in table.index:
            if table.loc[variant, f"{metric}_beyond"]:
                spec = SPECS[metric]
                named = get_metric(metric).reference.what.format(real_set=real_set or "val")
                what = f" ({named})" if named else ""
                out.setdefault(variant, {})[metric] = (
                    f"{spec.label} {table.loc[variant, f'{metric}_mean']:.{spec.digits}f} {direction} "
                    f"the {'ceiling' if direction == 'above' else 'floor'} {limit:.{spec.digits}f}{what}")
    return out


def reference_values(records: Sequence[RunRecord]) -> dict[str, dict]:
    """Mean of each metrics.json reference over evaluated runs, and the distinct values seen."""
    out = {}
    for key in REFERENCE_KEYS:
        values = [v for v in (r.value(key) for r in records if r.ok) if v is not None]
        out[key] = {"mean": float(np.mean(values)) if values else None,
                    "distinct": sorted({round(v, 6) for v in values})}
    return out


def has_paper_columns(dataset: str) -> bool:
    return dataset in PUBLISHED


# --------------------------------------------------------------------------- cell formatting

def _number(value: float, digits: int) -> str:
    return f"{value:.{digits}f}"


def format_cell(mean: float, std: float, n: int, row_n: int, spec: MetricSpec, *, bold: bool,
                latex: bool) -> str:
    """'62.3 ± 1.2' (n shown when it differs from the row's seed count); '–' when no value."""
    if n == 0 or math.isnan(mean):
        return "--" if latex else "–"
    text = _number(mean * spec.scale, spec.digits)
    if not math.isnan(std):
        pm = r" \pm " if latex else " ± "
        text += pm + _number(std * spec.scale, spec.digits)
    if latex:
        text = rf"\mathbf{{{text}}}" if bold else text
        text = f"${text}$"
    else:
        text = f"**{text}**" if bold else text
    if n != row_n:
        text += f" (n={n})"
    return text


def _plain(value: Optional[float], spec: MetricSpec, latex: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "--" if latex else "–"
    text = _number(value * spec.scale, spec.digits)
    return f"${text}$" if latex else text


def _seeds_cell(row: pd.Series) -> str:
    text = str(int(row["ok"]))
    if row["failed"]:
        text += f" (+{int(row['failed'])} failed)"
    return text


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
          "…": r"\ldots{}", "±": r"$\pm$", "×": r"$\times$", "–": "--", "—": "---",
          "Δ": r"$\Delta$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "³": r"$^3$", "→": r"$\to$"}


def latex_escape(text: str) -> str:
    """Plain text -> LaTeX text (special characters and the few symbols we print)."""
    return "".join(_LATEX.get(ch, ch) for ch in text)


def has_released_columns(table: pd.DataFrame) -> bool:
    return bool((table["released"] > 0).any())


BEYOND_MARK = ("†", r"$^{\dagger}$")


def render_main(table: pd.DataFrame, references: Mapping[str, dict], dataset: str, *,
                latex: bool = False, real_set: Optional[str] = "val") -> pd.DataFrame:
    """The main table as strings, with reference rows last; columns in display order.

    With released-weights runs, each published metric gets three columns: paper, released
    weights re-scored, retrained (KID: the last two). † marks a mean beyond the evaluator's
    resolution; "(degenerate …)" a variant whose outputs barely depend on the label map.
    `real_set`: protocol.real_set, the photos the FID floor row compares the training photos with.
    """
    paper = has_paper_columns(dataset)
    released = has_released_columns(table)
    arrows = {"higher": (r" $\uparrow$", " ↑"), "lower": (r" $\downarrow$", " ↓"), None: ("", "")}
    mark = BEYOND_MARK[1 if latex else 0]
    columns, rows = ["variant", "seeds"], []
    for spec in METRICS:
        label = (spec.latex if latex else spec.label) + arrows[spec.better][0 if latex else 1]
        if not released:
            columns.append(label)
            if paper and spec.key in PUBLISHED_METRICS:
                columns.append("paper")
            continue
        if paper and spec.key in PUBLISHED_METRICS:
            columns.append(f"{label}: paper")
        if spec.key in RELEASED_METRICS:
            columns.append(f"{label}: released weights, re-scored")
            label = f"{label}: retrained"
        columns.append(label)
    for variant, row in table.iterrows():
        name = latex_escape(variant) if latex else variant
        if row["degenerate"]:
            name += (" (degenerate)" if row["degenerate"] == row["ok"]
                     else f" (degenerate: {int(row['degenerate'])} of {int(row['ok'])})")
        if row["ok"] == 0 and row["failed"]:
            name += " (failed)"
        seeds = _seeds_cell(row) + (f" + {int(row['released'])} released" if row["released"] else "")
        cells = [name, seeds]
        for spec in METRICS:
            if released:
                if paper and spec.key in PUBLISHED_METRICS:
                    cells.append(_plain(row[f"paper_{spec.key}"], spec, latex))
                if spec.key in RELEASED_METRICS:
                    cells.append(_plain(row[f"released_{spec.key}_mean"], spec, latex))
            if row["ok"] == 0:
                cells.append("failed" if row["failed"] else ("--" if latex else "–"))
            else:
                cell = format_cell(row[f"{spec.key}_mean"], row[f"{spec.key}_std"],
                                   int(row[f"{spec.key}_n"]), int(row["ok"]), spec,
                                   bold=bool(row[f"{spec.key}_best"]), latex=latex)
                cells.append(cell + (f" {mark}" if row[f"{spec.key}_beyond"] else ""))
            if not released and paper and spec.key in PUBLISHED_METRICS:
                cells.append(_plain(row[f"paper_{spec.key}"], spec, latex))
        rows.append(cells)
    reference_rows: dict[str, dict[str, str]] = {}   # row label -> {metric: reference key}
    for metric in list_metrics():
        if metric.reference is not None:
            row = metric.reference.row.format(real_set=real_set or "val")
            reference_rows.setdefault(row, {})[metric.name] = metric.reference.key
    for label, keys in reference_rows.items():
        cells = [rf"\textit{{{label}}}" if latex else f"*{label}*", ""]
        for spec in METRICS:
            extra = (released and spec.key in RELEASED_METRICS) + (paper and spec.key in PUBLISHED_METRICS)
            value = references.get(keys.get(spec.key, ""), {}).get("mean")
            value = _plain(value, spec, latex) if spec.key in keys else ""
            # the reference sits in the column of our own runs' scores
            cells += [""] * extra + [value] if released else [value] + [""] * extra
        rows.append(cells)
    return pd.DataFrame(rows, columns=range(len(columns))).set_axis(columns, axis=1)


def format_interval(interval: Optional[Interval], spec: MetricSpec, *, latex: bool) -> str:
    """'-2.1 [-3.0, -1.2]*', the star when the interval excludes 0 and both sides have
    MIN_SEEDS_FOR_VERDICT seeds (fewer make no seed-robustness claim); '-2.1 [n/a]' when the
    interval is not available (not finite)."""
    if interval is None:
        return "--" if latex else "–"
    d = spec.interval_digits if spec.interval_digits is not None else spec.digits + 1
    if not (math.isfinite(interval.low) and math.isfinite(interval.high)):
        # e.g. fewer than 2 finite image resamples: the interval is not available.
        point = f"{interval.point * spec.scale:+.{d}f}"
        return f"${point}$ [n/a]" if latex else f"{point} [n/a]"
    values = [interval.point * spec.scale, interval.low * spec.scale, interval.high * spec.scale]
    point, low, high = (f"{v:+.{d}f}" for v in values)
    star = "*" if interval.excludes_zero and interval.min_seeds >= MIN_SEEDS_FOR_VERDICT else ""
    if latex:
        return f"${point}$ [${low}$, ${high}$]" + (r"$^{*}$" if star else "")
    return f"{point} [{low}, {high}]{star}"


def render_differences(intervals: Mapping[str, Mapping[str, Interval]], *,
                       latex: bool = False) -> pd.DataFrame:
    """Rows: variants; columns: Δ per bootstrapped metric (variant - spade) with its 95% CI."""
    delta = r"$\Delta$ " if latex else "Δ "
    metrics = bootstrap_metrics()
    columns = ["variant", "seeds (variant / spade)"] + [
        delta + (SPECS[m].latex if latex else SPECS[m].label) for m in metrics]
    rows = []
    for variant in variant_order(list(intervals)):
        per_metric = intervals[variant]
        any_interval = next(iter(per_metric.values()), None)
        seeds = (f"{any_interval.variant_seeds} / {any_interval.baseline_seeds}"
                 + (f" ({any_interval.method})" if any_interval.image_only else
                    f" (fewer than {MIN_SEEDS_FOR_VERDICT}: no verdict)"
                    if any_interval.min_seeds < MIN_SEEDS_FOR_VERDICT else "")
                 if any_interval else "")
        rows.append([latex_escape(variant) if latex else variant, seeds]
                    + [format_interval(per_metric.get(m), SPECS[m], latex=latex)
                       for m in metrics])
    return pd.DataFrame(rows, columns=columns)


def failed_runs_table(records: Sequence[RunRecord]) -> pd.DataFrame:
    rows = [{"run": str(r.dir), "variant": r.variant, "seed": r.seed,
             "training status": r.summary.get("status", "–"), "error": r.error}
            for r in records if not r.ok]
    return pd.DataFrame(rows, columns=["run", "variant", "seed", "training status", "error"])


# --------------------------------------------------------------------------- writers

def to_markdown(frame: pd.DataFrame, align: Optional[str] = None) -> str:
    """A GitHub Markdown table (pandas' own needs `tabulate`, which we do not depend on).

    `align`: one "l" or "r" per column; default the first column left, the others right.
    """
    def cell(value) -> str:
        text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    columns = [cell(c) for c in frame.columns]
    align = align or "l" + "r" * (len(columns) - 1)
    lines = ["| " + " | ".join(columns) + " |",
             "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|"]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(cell(v) for v in row.tolist()) + " |")
    return "\n".join(lines)


def to_latex(frame: pd.DataFrame, *, caption: str, label: str,
             midrule_before: Optional[int] = None) -> str:
    """A booktabs table; cells are already LaTeX. `midrule_before`: row index to rule above."""
    spec = "l" + "r" * (len(frame.columns) - 1)
    lines = [r"\begin{table}[htbp]", r"\centering", r"\small",
             rf"\caption{{{caption}}}", rf"\label{{{label}}}",
             rf"\resizebox{{\linewidth}}{{!}}{{%", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(str(c) for c in frame.columns) + r" \\", r"\midrule"]
    for i, (_, row) in enumerate(frame.iterrows()):
        if midrule_before is not None and i == midrule_before:
            lines.append(r"\midrule")
        lines.append(" & ".join("" if v is None else str(v) for v in row.tolist()) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    return "\n".join(lines)


def csv_rows(dataset: str, table: pd.DataFrame, references: Mapping[str, dict],
             intervals: Mapping[str, Mapping[str, Interval]]) -> pd.DataFrame:
    """Machine-readable numbers: one row per variant plus reference rows, raw units."""
    rows = []
    for variant, row in table.iterrows():
        out = {"dataset": dataset, "row": "variant", "variant": variant, "runs": row["runs"],
               "ok": row["ok"], "failed": row["failed"], "seeds": row["seeds"]}
        for spec in METRICS:
            for suffix in ("mean", "std", "n", "best", "beyond"):
                out[f"{spec.key}_{suffix}"] = row[f"{spec.key}_{suffix}"]
        for metric in PUBLISHED_METRICS:
            out[f"paper_{metric}"] = row[f"paper_{metric}"]
        out["released"] = row["released"]
        for metric in RELEASED_METRICS:
            out[f"released_{metric}_mean"] = row[f"released_{metric}_mean"]
        out["degenerate"] = row["degenerate"]
        for key in ("uniform_distinctness", "label_spread"):
            out[f"{key}_mean"] = row[f"{key}_mean"]
        for metric in bootstrap_metrics():
            interval = intervals.get(variant, {}).get(metric)
            out[f"diff_{metric}"] = interval.point if interval else math.nan
            out[f"diff_{metric}_ci_low"] = interval.low if interval else math.nan
            out[f"diff_{metric}_ci_high"] = interval.high if interval else math.nan
            out[f"diff_{metric}_method"] = interval.method if interval else ""
        rows.append(out)
    for key in REFERENCE_KEYS:
        value = references.get(key, {}).get("mean")
        metric = next(m for m in list_metrics() if m.reference is not None and m.reference.key == key)
        rows.append({"dataset": dataset, "row": "reference", "variant": key,
                     f"{metric.name}_mean": math.nan if value is None else value})
    frame = pd.DataFrame(rows)
    counts = ["runs", "ok", "failed", "released", "degenerate"] + [f"{spec.key}_n" for spec in METRICS]
    return frame.astype({c: "Int64" for c in counts if c in frame})
