"""Build an ablation report from run directories: ablation.md, .csv, .tex, summary.json, figures.

`build_report(run_dirs, out_dir)` reads every run below `run_dirs` (reports.collect),
groups them by dataset (runs on different datasets are never compared), and writes per
dataset the main table, failed runs, bootstrap differences to spade, agreement with the
paper, the label-dependence table (the paper's Figure 3 argument), what the scale can and
cannot show, figures and the evaluation protocol. The metric columns are the registered
metrics (spade_bench.metrics); a run that lacks one, or holds it at another version than the
column shows, gets "-" there and a note (reports.columns). Runs scored by different
evaluators, extractors or protocols are refused (ReportError naming the runs and values):
their scores are not comparable; a protocol key is compared among the runs holding a metric
that depends on it. Training settings, hardware and code commits that differ are listed,
not refused.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from reports import figures as figs
from reports.classes import per_class_note, per_class_table
from reports.bootstrap import (BASELINE, METHOD_IMAGES_ONLY, MIN_SEEDS_FOR_VERDICT, BootstrapResult,
                               BootstrapSettings, bootstrap_differences, bootstrap_metrics,
                               replicate_weights)
from reports.collect import ReportError, RunRecord, collect_runs, degenerate_counts
from reports.columns import MetricColumn, column_notes, metric_columns
from reports.curves import collect_points, curve_means, curves_markdown, curves_summary, learning_curves
from reports.eval_images import section_subset, subset_markdown
from reports.figures import read_losses
from reports.numerics import numerics_lines
from reports.paper import (PAPER_SEGMENTERS, Verdict, judge, scale_rule, verdict_line,
                           verdict_rule_text)
from reports.tables import (BEYOND_MARK, METRICS, beyond_resolution, csv_rows, failed_runs_table,
                            has_paper_columns, has_released_columns, latex_escape, main_table,
                            reference_values, render_differences, render_main, to_latex,
                            to_markdown)
from spade_bench.io import atomic_write_json, atomic_write_text, staged_folder
from spade_bench.metrics import COMMON_PROTOCOL_KEYS, get_metric, list_metrics
from spade_bench.run_folder import try_read_json

# metrics.json protocol keys that define the evaluation: a report refuses runs that differ here
# (each compared among the runs holding a metric that depends on it; the metrics declare them).
# Metric versions are compared per metric (reports.columns), implementations per version.
# eval_subset_sha256: which validation files were scored (metrics.json eval_subset), for every metric.
REFUSED_KEYS = tuple(dict.fromkeys([*(k for m in list_metrics() for k in m.protocol_keys), *COMMON_PROTOCOL_KEYS,
                                    "eval_subset_sha256"]))
# Also recorded and shown; a difference here is listed in the protocol footnote.
PROTOCOL_KEYS = REFUSED_KEYS + ("segmenter", "generation_size", "seeds", "real_stats")
# Training settings that confound a comparison when they differ between variants.
TRAINING_KEYS = ("preset", "steps", "checkpoint_step", "perceptual", "ema")
HARDWARE_KEYS = ("hardware",)


@dataclass
class DatasetSection:
    """Everything the report says about the runs of one dataset."""

    dataset: str
    records: list[RunRecord]
    table: pd.DataFrame
    references: dict
    bootstrap: BootstrapResult
    verdicts: list[Verdict]
    untested: list
    protocol: dict
    beyond: dict = field(default_factory=dict)
    scale: str = ""
    # reports.paper.scale_rule's reason when this scale draws no verdict ("" otherwise): the
    # judge and the Scale section both obey it.
    no_verdict: str = ""
    figures: dict[str, Path] = field(default_factory=dict)
    # protocol.real_set (refused when runs differ): the photos FID and its floor compare with.
    real_set: str = "val"
    columns: dict[str, MetricColumn] = field(default_factory=dict)
    # What the report calls the dataset: `--name`, else the format's name, or a `folder`
    # dataset's root folder name (RunRecord.dataset_name). `dataset` stays the format.
    name: str = ""

    @property
    def title(self) -> str:
        return self.name or self.dataset

    @property
    def slug(self) -> str:
        return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in self.title)


# --------------------------------------------------------------------------- protocol

def _protocol_value(record: RunRecord, key: str) -> Any:
    metrics = record.metrics or {}
    if key == "code":
        return record.code
    if key == "real_stats":
        name = (metrics.get("files") or {}).get("real_stats")
        return Path(name).name if name else None
    if key == "checkpoint_step":
        return metrics.get("checkpoint_step")
    if key in TRAINING_KEYS or key in HARDWARE_KEYS:
        return (metrics.get("run") or {}).get(key)
    protocol = metrics.get("protocol") or {}
    if key == "label_mapping" and key in protocol and protocol[key] is None:
        return "none"  # recorded as no mapping, unlike a metrics.json that predates the key
    return protocol.get(key)


def _key_users(key: str) -> Optional[set[str]]:
    """The metrics whose value depends on (or records) a protocol key; None for a key of every run."""
    if key in COMMON_PROTOCOL_KEYS:
        return None
    users = {m.name for m in list_metrics()
             if key in m.protocol_keys or key in m.recorded_keys or (key == "real_stats" and key in m.files)}
    return users or None


def _applies(record: RunRecord, key: str) -> bool:
    """A key is compared and shown over the runs that hold a metric depending on it."""
    users = _key_users(key)
    return users is None or any(record.value(name) is not None for name in users)


def _shown_versions(record: RunRecord) -> dict[str, str]:
    """The run's protocol.metric_versions entries of the metrics it has in the report's columns."""
    versions = ((record.metrics or {}).get("protocol") or {}).get("metric_versions")
    if not isinstance(versions, dict):
        return versions
    registered = {m.name for m in list_metrics()}
    return {name: text for name, text in versions.items() if name not in registered or record.value(name) is not None}


def protocol_summary(records: Sequence[RunRecord]) -> dict[str, dict]:
    """key -> {"values": {json value: [run labels]}, "kind": protocol|training|hardware|code|metric_versions}."""
    out = {}
    for kind, keys in (("protocol", PROTOCOL_KEYS), ("training", TRAINING_KEYS),
                       ("hardware", HARDWARE_KEYS), ("code", ("code",))):
        for key in keys:
            values: dict[str, list[str]] = {}
            for record in records:
                if record.ok and _applies(record, key):
                    value = json.dumps(_protocol_value(record, key), sort_keys=True)
                    values.setdefault(value, []).append(record.label)
            out[key] = {"kind": kind, "values": values}
    values = {}
    for record in records:
        if record.ok:
            values.setdefault(json.dumps(_shown_versions(record), sort_keys=True), []).append(record.label)
    out["metric_versions"] = {"kind": "metric_versions", "values": values}
    return out


def refuse_mixed_protocols(records: Sequence[RunRecord],
                           columns: Optional[dict[str, MetricColumn]] = None) -> None:
    """Raise ReportError when evaluated runs were scored by different evaluators or protocols,
    or (`columns`) hold one metric version computed by different implementations."""
    protocol = protocol_summary(records)
    differ = []
    for key in REFUSED_KEYS:
        values = protocol[key]["values"]
        if len(values) > 1:
            differ.append(f"{key}: " + " vs ".join(
                f"{_show(value)} ({', '.join(runs)})" for value, runs in values.items()))
    for name, column in (columns or {}).items():
        if len(column.implementations) > 1:
            differ.append(f"metric_versions {name}: " + " vs ".join(
                f"{text} ({', '.join(runs)})" for text, runs in column.implementations.items()))
    if differ:
        raise ReportError(
            "these runs were scored under different evaluation protocols, so one table would "
            "compare incomparable numbers: " + "; ".join(differ) + ". Re-score them with one "
            "evaluator (`spade-bench eval --run RUN` with the same segmenter and eval settings), "
            "or report each group separately")


def evaluator_warnings(records: Sequence[RunRecord]) -> dict[str, list[str]]:
    """metrics.json "warnings" (e.g. FID bias with few images): warning -> runs that gave it."""
    out: dict[str, list[str]] = {}
    for record in records:
        for warning in (record.metrics or {}).get("warnings") or []:
            out.setdefault(str(warning), []).append(record.label)
    return out


def protocol_mismatches(protocol: dict, kind: str) -> list[str]:
    return [k for k, v in protocol.items() if v["kind"] == kind and len(v["values"]) > 1]


def _show(value_json: str) -> str:
    value = json.loads(value_json)
    if value is None:
        return "not recorded"
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12] + "…"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return f"{value[1]}x{value[0]} (W x H)"  # recorded as (H, W)
    if isinstance(value, list):
        return ", ".join(map(str, value)) if len(value) <= 8 else \
            f"{', '.join(map(str, value[:8]))}, … ({len(value)})"
    return str(value)


def protocol_footnote(protocol: dict) -> str:
    """One paragraph: each protocol value, or every value with its runs when they differ."""
    names = {"fid_protocol": "FID protocol", "fid_extractor_sha256": "FID extractor sha256",
             "segmenter": "segmenter", "segmenter_sha256": "segmenter sha256",
             "eval_size": "evaluation size", "generation_size": "generation size",
             "image_resize": "image resize", "label_resize": "label resize",
             "num_images": "images", "seeds": "generation seeds",
             "metric_versions": "metric versions", "real_stats": "real statistics",
             "preset": "preset", "steps": "training steps", "checkpoint_step": "checkpoint step",
             "perceptual": "perceptual network", "ema": "EMA", "hardware": "hardware",
             "segmenter_input_size": "segmenter input size", "label_mapping": "label mapping",
             "real_set": "real-image set", "kid_subset_size": "KID subset size",
             "kid_subsets": "KID subsets", "code": "code commit",
             "eval_subset_sha256": "scored validation files (sha256)"}
    parts = []
    for key, info in protocol.items():
        values = info["values"]
        if not values:
            continue
        name = names.get(key, key.replace("_", " "))
        if len(values) == 1:
            parts.append(f"{name}: {_show(next(iter(values)))}")
        elif info["kind"] == "code":
            listed = "; ".join(f"{_show(v)} ({', '.join(runs)})" for v, runs in values.items())
            parts.append(f"code commits differ (listed, not an error): {listed}")
        elif info["kind"] == "metric_versions":
            listed = "; ".join(f"{_show(v)} ({', '.join(runs)})" for v, runs in values.items())
            parts.append(f"metric versions by run (compared per metric; see the notes under the main table): "
                         f"{listed}")
        else:
            listed = "; ".join(f"{_show(v)} ({', '.join(runs)})" for v, runs in values.items())
            parts.append(f"**{name} DIFFERS: {listed}**")
    return "; ".join(parts) + "." if parts else "No evaluated runs, so no protocol to report."


# --------------------------------------------------------------------------- sections

def _scale(records: Sequence[RunRecord]) -> tuple[str, str]:
    """("200 training steps, 32 images at 64 px", why this scale draws no verdict or "") over
    evaluated runs; the second is reports.paper.scale_rule's."""
    ok = [r for r in records if r.ok and not r.released]
    steps = sorted({s for s in (_protocol_value(r, "steps") for r in ok) if isinstance(s, int)})
    images = sorted({n for n in (_protocol_value(r, "num_images") for r in ok) if isinstance(n, int)})
    sizes = sorted({json.dumps(_protocol_value(r, "eval_size")) for r in ok} - {"null"})
    presets = {_protocol_value(r, "preset") for r in ok}
    parts = []
    if steps:
        parts.append(f"{'/'.join(map(str, steps))} training steps")
    if images:
        size = _show(sizes[0]) if len(sizes) == 1 else ""
        size = size.replace(" (W x H)", " px (W x H)") if "(W x H)" in size else (size and f"{size} px")
        parts.append(f"{'/'.join(map(str, images))} images" + (f" at {size}" if size else ""))
    return ", ".join(parts), scale_rule(presets)


def real_set_of(protocol: dict) -> str:
    """protocol.real_set of a section's runs ("val" when not recorded: runs before the key)."""
    values = [json.loads(v) for v in (protocol.get("real_set") or {}).get("values") or {}]
    values = [v for v in values if v is not None]
    return values[0] if len(values) == 1 else "val"


def build_section(dataset: str, records: list[RunRecord], settings: BootstrapSettings,
                  figures_dir: Optional[Path], progress: bool,
                  columns: Optional[dict[str, MetricColumn]] = None, *, name: str = "") -> DatasetSection:
    columns = metric_columns(records) if columns is None else columns
    references = reference_values(records)
    table = main_table(records, dataset, references)
    protocol = protocol_summary(records)
    real_set = real_set_of(protocol)
    # Released weights are one model each, not a seed of our training: never in the intervals.
    bootstrap = bootstrap_differences([r for r in records if r.ok and not r.released], settings,
                                      progress=progress)
    present = {v for v in table.index if table.loc[v, "ok"] > 0}
    params = {v: (None if math.isnan(table.loc[v, "generator_params_mean"])
                  else float(table.loc[v, "generator_params_mean"])) for v in table.index}
    beyond = beyond_resolution(table, references, real_set)
    scale, no_verdict = _scale(records)
    curve_points, _ = collect_points(records)
    verdicts, untested = judge(bootstrap.intervals, present, params, blocked=beyond, scale=scale,
                               no_verdict=no_verdict, degenerate=degenerate_counts(records),
                               curves=curve_means(curve_points))
    section = DatasetSection(dataset, records, table, references, bootstrap, verdicts, untested,
                             protocol, beyond, scale, no_verdict=no_verdict, real_set=real_set, columns=columns,
                             name=name)
    if figures_dir is not None:
        slug = section.slug
        made = {"samples": figs.sample_grid(records, figures_dir / f"{slug}_samples.png"),
                "losses": figs.loss_curves(records, figures_dir / f"{slug}_losses.png"),
                "metrics": figs.metric_bars(table, references, figures_dir / f"{slug}_metrics.png",
                                            real_set),
                "curves": learning_curves(curve_points, references,
                                          figures_dir / f"{slug}_curves.png", real_set)}
        section.figures = {k: v for k, v in made.items() if v is not None}
    return section


def last_discriminator_loss(record: RunRecord) -> Optional[tuple[int, float]]:
    """(step, D/total) of the last logged step with a finite D loss (D/real + D/fake when the log
    has no total: `read_losses` derives the D/total column from them)."""
    frame = read_losses(record)
    if frame is None or "D/total" not in frame:
        return None
    logged = frame[["step", "D/total"]].dropna()
    if logged.empty:
        return None
    return int(logged["step"].iloc[-1]), float(logged["D/total"].iloc[-1])


def label_dependence_markdown(s: DatasetSection) -> list[str]:
    """The paper's Figure 3 argument: per variant, how distinct its outputs are across uniform maps."""
    table = s.table
    known = table[table["uniform_distinctness_n"] > 0]
    lines = ["### Label dependence (the paper's Figure 3 argument)", ""]
    if known.empty:
        return lines + ["No run recorded label dependence (metrics.json `label_dependence`); "
                        "re-score the runs with the current `spade-bench eval --run RUN`.", ""]
    rows = []
    for variant, row in known.iterrows():
        spread = row["uniform_distinctness_std"]
        rows.append([variant, str(int(row["uniform_distinctness_n"])),
                     f"{row['uniform_distinctness_mean']:.4f}"
                     + ("" if math.isnan(spread) else f" ± {spread:.4f}"),
                     "–" if math.isnan(row["label_spread_mean"]) else f"{row['label_spread_mean']:.4f}",
                     f"{int(row['degenerate'])} of {int(row['degenerate_known'])}"])
    frame = pd.DataFrame(rows, columns=["variant", "seeds", "uniform distinctness ↑",
                                        "label spread ↑", "degenerate runs"])
    rules = {str(((r.metrics or {}).get("label_dependence") or {}).get("rule"))
             for r in s.records if r.ok and (r.metrics or {}).get("label_dependence")}
    lines += [to_markdown(frame), ""]
    text = ("Uniform distinctness: how different a variant's outputs are across label maps "
            "that are each a single class everywhere. This is the paper's Figure 3 argument: "
            "when the label map enters only at the input and a normalisation layer follows "
            "(pix2pixHD's instance norm), a uniform map is normalised away and every class "
            "gives much the same image; SPADE feeds the map to every normalisation layer, so "
            "the outputs stay distinct. Unlike mIoU and FID, this needs no trained evaluator, "
            "so it holds at any scale. Label spread: how much the outputs vary across different "
            "real label maps at a fixed z. Degenerate: outputs that barely depend on the label "
            "map, by the rule " + "; ".join(sorted(rules)) + ".")
    means = known["uniform_distinctness_mean"]
    if BASELINE in means and "pix2pixhd" in means:
        a, b = means[BASELINE], means["pix2pixhd"]
        text += (f" Here spade's outputs are {'more' if a > b else 'not more'} distinct across "
                 f"uniform maps than pix2pixhd's ({a:.4f} vs {b:.4f}), "
                 f"{'as' if a > b else 'unlike what'} the paper's Figure 3 argues; without "
                 f"an interval this is a description of these runs, not a verdict.")
    return lines + [text, ""]


# Measured once on the smoke preset with the procedural data (64 px, one 150-step segmenter,
# spade-bench 0.1); quoted only for reports of that same set-up, as context for the slow start.
_SMOKE_CURVE = (" (on this preset and data, spade measured 13.8, 33.3, 43.0 and 44.8 mIoU after "
                "200, 400, 800 and 1600 steps)")


# The sign of SPADE's slow start: a discriminator that wins early, its last logged loss
# (D/real + D/fake; 2 at the hinge loss's balance) at most this. The smoke demo's spade ended at
# 0.232 (one blurry scene, degenerate); the CamVid run of issue 23, whose spade lagged
# too, at 0.813: no sign there.
SLOW_START_D_LOSS = 0.5


def _is_smoke_demo(s: DatasetSection) -> bool:
    return s.dataset == "synthetic" and all(_protocol_value(r, "preset") == "smoke" for r in s.records if r.ok)


def scale_markdown(s: DatasetSection) -> list[str]:
    """What this scale can and cannot show, and why SPADE starts slowly when it does."""
    scale = s.scale
    if not s.no_verdict:
        return []
    lines = ["### Scale", "",
             f"At this scale ({scale}) the runs do **not** reproduce the paper's ordering, and "
             f"this report draws no verdict from them ({s.no_verdict}). The paper trains for about 126,000 steps "
             f"at 256 px or more (the `paper` preset); at a few hundred steps the ranking "
             f"reflects how fast each variant starts, not where it ends{_SMOKE_CURVE if _is_smoke_demo(s) else ''}. "
             f"The evaluator's limits matter too: a score above its ceiling or "
             f"below the FID floor is marked {BEYOND_MARK[0]} and not compared. What this scale "
             f"does test: that every variant trains, is scored and reported end to end, and "
             f"the label-dependence table above.", ""]
    table = s.table
    spade_runs = [r for r in s.records if r.ok and not r.released and r.variant == BASELINE]
    if not spade_runs:
        return lines
    others = table.drop(index=BASELINE, errors="ignore")["miou_mean"].dropna()
    degenerate = [r for r in spade_runs if r.degenerate]
    lagging = (BASELINE in table.index and len(others)
               and table.loc[BASELINE, "miou_mean"] < 0.5 * others.max())
    if not degenerate and not lagging:
        return lines
    last = {record.label: last_discriminator_loss(record) for record in spade_runs}
    losses = [f"{label} {d:.3f} at step {step}" for label, (step, d) in
              ((label, v) for label, v in last.items() if v is not None)]
    others_d = []
    for record in s.records:
        if record.ok and not record.released and record.variant != BASELINE:
            other = last_discriminator_loss(record)
            if other is not None:
                others_d.append(f"{record.label} {other[1]:.3f}")
    why = (f"{len(degenerate)} of {len(spade_runs)} spade runs are flagged degenerate"
           if degenerate else f"spade's mIoU is less than half the best variant's")
    others = f" (other variants: {'; '.join(others_d)})" if others_d else ""
    showing = [label for label, v in last.items() if v is not None and v[1] <= SLOW_START_D_LOSS]
    if not showing:
        seen = (f"its last logged discriminator loss (D/total = D/real + D/fake) is {'; '.join(losses)}{others}, "
                f"not near 0 (at most {SLOW_START_D_LOSS:g})" if losses else "no discriminator loss was logged")
        text = (f"spade lags here ({why}), but its runs do not show the sign of SPADE's slow start from the "
                f"original initialisation (a discriminator that wins early, its loss near 0): {seen}. So this "
                f"report does not explain the gap by the slow start; look at the loss curves and the samples.")
        return lines + [text, ""]
    text = (f"SPADE starts slowly here ({why}), and its runs show the sign: a discriminator that wins early, "
            f"its last logged loss (D/total = D/real + D/fake) {'; '.join(losses)}{others}, at most "
            f"{SLOW_START_D_LOSS:g} in {len(showing)} of {len(spade_runs)} spade runs. This is expected, not a "
            f"bug: its SPADE layers' MLPs start at the original initialisation (xavier, gain 0.02), so for the "
            f"first few hundred steps the generator draws one blurry scene whatever the label map.")
    if _is_smoke_demo(s):
        # Measured on this very set-up (smoke preset, procedural data); not quoted for other data.
        text += (" On this preset and data their gradients measured about 1e-4 against about 4 in the rest of "
                 "the generator, and a larger init gain or learning rate gave 31-33 mIoU at 200 steps.")
    return lines + [text, ""]


def _warnings(sections: Sequence[DatasetSection]) -> list[str]:
    out = []
    for s in sections:
        where = f"{s.title}: " if len(sections) > 1 else ""
        # The segmenter's path may differ between machines; its sha256 (refused when it
        # differs) is what identifies it.
        protocol = [k for k in protocol_mismatches(s.protocol, "protocol") if k != "segmenter"]
        if protocol:
            out.append(f"**WARNING — {where}the runs disagree on the evaluation protocol "
                       f"({', '.join(protocol)}): their scores are NOT comparable.** "
                       f"See the protocol footnote for which run used what.")
        training = protocol_mismatches(s.protocol, "training")
        if training:
            out.append(f"**Warning — {where}training settings differ between runs "
                       f"({', '.join(training)}): differences between variants are confounded.**")
        if protocol_mismatches(s.protocol, "code"):
            out.append(f"Note — {where}runs were made at different code commits (listed in the "
                       f"protocol footnote); not an error, but a difference may come from the code.")
        if protocol_mismatches(s.protocol, "hardware"):
            out.append(f"Note — {where}runs ran on different hardware: the images/s and memory "
                       f"columns are not comparable.")
        failed = [r for r in s.records if not r.ok]
        if failed:
            out.append(f"{where}{len(failed)} of {len(s.records)} runs failed or were not "
                       f"evaluated: {', '.join(r.label for r in failed)} (see Failed runs).")
        for line in s.bootstrap.consistency:
            out.append(f"{where}Inconsistent inputs: {line}.")
        for r in s.records:
            out.extend(f"{where}{r.label}: {note}" for note in r.notes)
    return out


# --------------------------------------------------------------------------- markdown

def _listed(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _recomputed_from(fid_replicates: int) -> str:
    """How each bootstrapped metric is recomputed on a resample, from the metrics' declarations."""
    metrics = [get_metric(name) for name in bootstrap_metrics()]
    segmentation = [m.short for m in metrics if m.inputs == "segmentation"]
    features = [m.short for m in metrics if m.inputs == "features" and not m.costly_replicates]
    costly = [m.short for m in metrics if m.costly_replicates]
    parts = []
    if segmentation:
        parts.append(f"{_listed(segmentation)} recomputed from per-image tp/fp/fn sums")
    if features:
        parts.append(f"{_listed(features)} from the features")
    if costly:
        parts.append(f"{_listed(costly)} from the first {fid_replicates} resamples, whose upward bias "
                     f"does not move the centre")
    return ", ".join(parts)


def _bootstrap_explanation(result: BootstrapResult) -> str:
    s = result.settings
    fid = min(s.fid_replicates, s.replicates)
    intervals = [iv for per in result.intervals.values() for iv in per.values()]
    image_only = any(iv.image_only for iv in intervals)
    text = (f"Δ = variant − {BASELINE}, mean over seeds. [low, high] is a {s.confidence:.0%} "
            f"interval centred on Δ: Δ ± t × sqrt(seed part + image part). The seed part is "
            f"s²/n of each side's per-run scores (Welch–Satterthwaite degrees of freedom); the "
            f"image part is the variance of Δ over B = {s.replicates} resamples of the "
            f"{result.num_images} validation images (one resample shared by every run, so pairs "
            f"match by image index; {_recomputed_from(fid)}). RNG seed {s.seed}. In a known-truth simulation "
            f"(tests/reports/test_bootstrap.py) these intervals cover the true difference at "
            f"least 90% of the time at {MIN_SEEDS_FOR_VERDICT} seeds per variant. "
            f"* = the interval excludes 0 with at least {MIN_SEEDS_FOR_VERDICT} seeds per "
            f"variant (on a finding's primary metric that is what a verdict needs; on the others "
            f"it is evidence before the correction for testing several metrics, see the verdict "
            f"rule); with fewer, no star and no claim that a gap would survive other seeds.")
    if image_only:
        text += (f" Rows marked \"{METHOD_IMAGES_ONLY}\" have fewer than 2 seeds on a side: "
                 f"their interval covers only which validation images were drawn, not which "
                 f"seed training happened to take, so it supports no claim about seed "
                 f"robustness and no verdict (with 1 seed such intervals covered about 30% of "
                 f"the time in the same simulation).")
    return text


def _released_note(s: DatasetSection) -> str:
    segmenter = PAPER_SEGMENTERS.get(s.dataset, "the paper's own segmenter")
    ours = []
    for key in ("segmenter_sha256", "segmenter_input_size", "label_mapping", "real_set", "eval_size"):
        values = s.protocol.get(key, {}).get("values") or {}
        if len(values) == 1:
            ours.append(f"{key.replace('_', ' ')} {_show(next(iter(values)))}")
    return ("\"released weights, re-scored\": NVlabs' released checkpoints (metrics.json "
            "run.provenance.source = nvlabs), imported and scored by this report's evaluator; "
            "\"retrained\": runs trained by spade-bench (mean over seeds); \"paper\": Table 1 as "
            f"published. Protocol difference: the paper scored with {segmenter} on its own "
            "real-image set and resize, which nobody recorded; the other two columns share one "
            "protocol (" + ", ".join(ours) + "), so only they compare like with like. Released "
            "weights are not seeds: they stay out of the means, the intervals and the verdicts.")


def _best_text() -> str:
    """'higher mIoU, pixel accuracy, ... and images/s; lower FID, KID and peak memory' from the
    metrics' declared directions."""
    higher = [m.short for m in list_metrics() if m.direction == "higher"] + ["images/s"]
    lower = [m.short for m in list_metrics() if m.direction == "lower"] + ["peak memory"]
    return f"higher {_listed(higher)}; lower {_listed(lower)}"


def _section_markdown(s: DatasetSection) -> str:
    roots = sorted({str((r.config.get("data") or {}).get("root")) for r in s.records
                    if (r.config.get("data") or {}).get("root")})
    source = f" (`{s.dataset}` format at {', '.join(f'`{root}`' for root in roots)})" \
        if s.title != s.dataset and roots else (f" (`{s.dataset}` format)" if s.title != s.dataset else "")
    lines = [f"## Dataset: {s.title}{source}", "", "### Main table", "",
             to_markdown(render_main(s.table, s.references, s.dataset, real_set=s.real_set)), ""]
    lines.append("Cells: mean ± sample std over evaluated seeds; \"seeds\" counts evaluated runs "
                 "(failed runs in brackets are never averaged); (n=…) where a value is missing "
                 f"for some seeds. **Bold**: best mean per column — {_best_text()}; means tied "
                 "at the shown precision are all bold, and a column where every variant ties has none; generator "
                 "parameters are not marked. Reference rows come from metrics.json `references`.")
    if s.beyond:
        listed = "; ".join(f"{v}: {', '.join(m.values())}" for v, m in s.beyond.items())
        lines.append(f"{BEYOND_MARK[0]} **beyond the evaluator's resolution**: the segmenter "
                     f"scores real photos lower, or real photos' FID floor is higher, than this "
                     f"mean ({listed}), so the evaluator cannot rank it and no verdict is drawn "
                     f"from it.")
    if s.table["degenerate"].any():
        lines.append("(degenerate): the outputs barely depend on the label map (metrics.json "
                     "`label_dependence.degenerate`; see Label dependence).")
    if has_released_columns(s.table):
        lines.append(_released_note(s))
    if has_paper_columns(s.dataset):
        segmenter = PAPER_SEGMENTERS.get(s.dataset, "its own segmenter")
        lines.append(f"\"paper\": Table 1 of Park et al. 2019 (spade → SPADE, pix2pixhd → "
                     f"pix2pixHD), scored with {segmenter}; ours uses a different segmenter and "
                     f"schedule, so compare orderings rather than absolute values.")
    else:
        lines.append(f"The paper reports no numbers on {s.title}, so there are no paper columns.")
    lines.append("")
    notes = column_notes(s.columns, sum(r.ok for r in s.records))
    if notes:
        lines += ["Metric values a run lacks (–; left out of its means, intervals and verdicts):", ""]
        lines += [f"- {note}" for note in notes] + [""]

    classes = per_class_table(s.records)
    if classes is not None:
        lines += ["### Per-class IoU", "", to_markdown(classes), "", per_class_note(s.records), ""]

    failed = failed_runs_table(s.records)
    lines += ["### Failed runs", ""]
    lines.append(to_markdown(failed, align="llrll") if len(failed)
                 else "All runs finished and were evaluated.")
    lines.append("")

    lines += [f"### Differences to {BASELINE} (bootstrap {s.bootstrap.settings.confidence:.0%} CI)", ""]
    if s.bootstrap.intervals:
        lines += [to_markdown(render_differences(s.bootstrap.intervals)), "",
                  _bootstrap_explanation(s.bootstrap)]
    else:
        lines.append("No intervals.")
    lines += [f"- {note}" for note in s.bootstrap.notes]
    lines.append("")

    lines += ["### Agreement with the paper", ""]
    lines += [verdict_line(v) for v in s.verdicts]
    if not s.verdicts:
        lines.append("- No finding of the paper can be checked: it needs both of its variants.")
    if s.untested:
        lines.append("- Not tested here (a variant was not run or not evaluated): " + "; ".join(
            f"{f.text} ({f.better} vs {f.worse})" for f in s.untested) + ".")
    if s.verdicts:
        lines += ["", verdict_rule_text(s.bootstrap.settings.confidence)]
    lines.append("")

    lines += label_dependence_markdown(s)
    lines += scale_markdown(s)
    lines += curves_markdown(*collect_points(s.records), s.references)

    lines += ["### Figures", ""]
    captions = {"samples": "Validation label maps rendered by every variant (lowest seed)",
                "losses": "Training losses (moving average; dashed = failed run)",
                "metrics": "Metrics per variant (error bars: std over seeds, only for variants with 2 or more)",
                "curves": "Learning curves: mean over seeds (line) and each seed (points) against the training "
                          "step; dashed: the evaluator's ceiling or floor"}
    for key, path in s.figures.items():
        lines += [f"![{captions[key]}](figures/{path.name})", f"*{captions[key]}.*", ""]
    if not s.figures:
        lines += ["No figures.", ""]

    lines += subset_markdown(s.records)
    lines += ["### Protocol", "", protocol_footnote(s.protocol), ""]
    lines += numerics_lines(s.records)
    warnings = evaluator_warnings(s.records)
    if warnings:
        lines += ["Evaluator warnings (from metrics.json):", ""]
        lines += [f"- {w} ({len(runs)} of {sum(r.ok for r in s.records)} runs)"
                  for w, runs in warnings.items()]
        lines.append("")
    return "\n".join(lines)


def render_markdown(name: str, inputs: Sequence[str], sections: Sequence[DatasetSection],
                    warnings: Sequence[str]) -> str:
    records = [r for s in sections for r in s.records]
    ok = sum(r.ok for r in records)
    lines = [f"# Ablation report: {name}", "",
             f"{len(records)} runs ({ok} evaluated, {len(records) - ok} failed) from "
             f"{', '.join(f'`{p}`' for p in inputs)}; built "
             f"{_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} by `spade-bench report`. "
             f"Files: [ablation.csv](ablation.csv), [ablation.tex](ablation.tex), "
             f"[summary.json](summary.json).", ""]
    if len(sections) > 1:
        lines += [f"Runs on {len(sections)} datasets ({', '.join(s.title for s in sections)}) "
                  f"are reported separately and never compared.", ""]
    if warnings:
        lines += ["\n>\n".join(f"> {w}" for w in warnings), ""]
    lines += [_section_markdown(s) for s in sections]
    return "\n".join(lines).rstrip() + "\n"


def render_latex(sections: Sequence[DatasetSection]) -> str:
    parts = ["% spade-bench ablation tables; needs \\usepackage{booktabs,graphicx}", ""]
    for s in sections:
        main = render_main(s.table, s.references, s.dataset, latex=True, real_set=s.real_set)
        parts.append(to_latex(
            main, caption=f"SPADE ablation on {latex_escape(s.title)}: mean $\\pm$ std over seeds; bold = "
                          f"best per column.", label=f"tab:ablation-{s.slug}",
            midrule_before=len(s.table)))
        if s.bootstrap.intervals:
            s_ = s.bootstrap.settings
            parts.append(to_latex(
                render_differences(s.bootstrap.intervals, latex=True),
                caption=f"Differences to {BASELINE} on {latex_escape(s.title)} with "
                        f"{100 * s_.confidence:.0f}\\% "
                        f"hierarchical bootstrap intervals (B={s_.replicates}; FID "
                        f"B={min(s_.fid_replicates, s_.replicates)}); $^{{*}}$: excludes 0.",
                label=f"tab:ablation-diff-{s.slug}"))
        footnote = protocol_footnote(s.protocol).replace("**", "")
        parts.append(f"% Protocol ({s.title}):\n\\noindent\\footnotesize Protocol: "
                     f"{latex_escape(footnote)}\\normalsize")
        parts.append("")
    return "\n\n".join(parts)


# --------------------------------------------------------------------------- json

def _clean(value: Any) -> Any:
    """JSON-safe: NaN -> null, numpy -> Python, paths -> strings."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(value) else float(value)
    if isinstance(value, Path):
        return str(value)
    return value


# Image resamples summary.json keeps per variant and metric for `spade-bench compare` (the
# first of the report's draws; 200 measure an image variance to about 10%), as one string of
# numbers in 6 significant digits each (far finer than the spread they measure): about 1.6 kB
# per variant and metric.
COMPARE_RESAMPLES = 200


def rerun_fields(record: RunRecord) -> dict[str, Any]:
    """What `spade-bench compare` needs of one evaluated run when only summary.json is at hand:
    its metric values as metrics.json holds them, their versions, its protocol (REFUSED_KEYS that
    apply to it), its experiment (non-default experiment keys but the seed) and numerics state."""
    if not record.ok:
        return {}
    metrics = record.metrics or {}
    values = {k: v for k, v in (metrics.get("metrics") or {}).items() if isinstance(v, (int, float))}
    return {"values": values, "metric_versions": _shown_versions(record),
            "protocol": {k: _protocol_value(record, k) for k in REFUSED_KEYS if _applies(record, k)},
            "experiment": record.experiment(), "numerics": record.numerics(),
            "checkpoint_step": metrics.get("checkpoint_step")}


def replicates_json(result: BootstrapResult) -> Optional[dict[str, Any]]:
    """The per-variant mean replicates on the first COMPARE_RESAMPLES image resamples, with the
    draw that made them (reports.bootstrap.replicate_weights), or None without any."""
    if not result.variant_replicates or result.num_images is None:
        return None
    s = result.settings
    weights, _ = replicate_weights(result.num_images, s)
    stored = min(COMPARE_RESAMPLES, s.replicates)
    return {"num_images": result.num_images, "seed": s.seed, "replicates": s.replicates,
            "fid_replicates": s.fid_replicates, "stored": stored,
            "weights_sha256": weights_digest(weights[:stored]),
            "runs": result.replicate_runs,
            "by_variant": {v: {m: " ".join(f"{x:.6g}" for x in reps[:stored]) for m, reps in per.items()}
                           for v, per in result.variant_replicates.items()}}


def weights_digest(weights: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(weights, dtype=np.int32).tobytes()).hexdigest()


def _records_or_none(frame: Optional[pd.DataFrame]) -> Optional[list[dict]]:
    return None if frame is None else frame.to_dict(orient="records")


def summary_json(name: str, inputs: Sequence[str], sections: Sequence[DatasetSection],
                 warnings: Sequence[str], settings: BootstrapSettings, files: dict) -> dict:
    datasets = {}
    for s in sections:
        datasets[s.title] = {
            "format": s.dataset,
            "table": s.table.reset_index().to_dict(orient="records"),
            "references": s.references,
            "differences_to": BASELINE,
            "differences": {v: {m: iv.to_json() for m, iv in per.items()}
                            for v, per in s.bootstrap.intervals.items()},
            "bootstrap_num_images": s.bootstrap.num_images,
            "bootstrap_notes": s.bootstrap.notes,
            "consistency_problems": s.bootstrap.consistency,
            "findings": [v.to_json() for v in s.verdicts],
            "beyond_resolution": s.beyond,
            "scale": s.scale,
            "findings_not_tested": [f.text for f in s.untested],
            "protocol": {k: {"kind": v["kind"],
                             "values": [{"value": json.loads(j), "runs": runs}
                                        for j, runs in v["values"].items()]}
                         for k, v in s.protocol.items()},
            "protocol_mismatches": protocol_mismatches(s.protocol, "protocol"),
            "training_mismatches": protocol_mismatches(s.protocol, "training"),
            "evaluator_warnings": evaluator_warnings(s.records),
            "metric_coverage": {name: column.to_json() for name, column in s.columns.items()},
            "per_class_iou": _records_or_none(per_class_table(s.records)),
            "eval_subset": section_subset(s.records),
            "learning_curves": curves_summary(*collect_points(s.records)),
            "figures": {k: f"figures/{p.name}" for k, p in s.figures.items()},
            "replicates": replicates_json(s.bootstrap),
        }
    return _clean({
        "schema": 1, "name": name, "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "inputs": list(inputs), "bootstrap": asdict(settings),
        "metric_columns": [asdict(m) for m in METRICS],
        "runs": [r.to_json() | rerun_fields(r) for s in sections for r in s.records],
        "warnings": list(warnings), "datasets": datasets, "files": files,
    })


# --------------------------------------------------------------------------- entry point

def dataset_groups(records: Sequence[RunRecord],
                   dataset_name: Optional[str] = None) -> dict[tuple[str, str], list[RunRecord]]:
    """(format, name) -> its runs: runs on different datasets are never compared. A `folder`
    dataset is named by its root folder (two own datasets are two groups); `dataset_name`
    (`report --name`) names the one dataset of the runs instead."""
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for record in records:
        groups.setdefault((record.dataset, record.dataset_name), []).append(record)
    groups = dict(sorted(groups.items()))
    if dataset_name is not None:
        if len(groups) > 1:
            raise ReportError(f"--name {dataset_name!r} names the dataset of the runs, but they are on "
                              f"{len(groups)} datasets ({', '.join(name for _, name in groups)}); report each "
                              f"dataset separately, or leave out --name")
        groups = {(key[0], dataset_name): group for key, group in groups.items()}
    return groups


def build_report(run_dirs: Sequence[str | Path], out_dir: str | Path, name: Optional[str] = None,
                 *, settings: BootstrapSettings = BootstrapSettings(), figures: bool = True,
                 progress: bool = True, dataset_name: Optional[str] = None) -> dict[str, Any]:
    """Read the runs under `run_dirs` and write the report into `out_dir`.

    `figures=False` skips the PNGs (tables only, a few seconds faster). `dataset_name`: what
    the report calls the runs' dataset (default: the format's name; a `folder` dataset's root
    folder name); a ReportError when the runs are on several datasets.

    Returns {"markdown", "csv", "latex", "summary": Path, "figures": [Path],
    "warnings": [str], "runs": int, "failed": int}. Raises ReportError when no run
    directory is found.
    """
    out_dir = Path(out_dir)
    name = name or out_dir.name
    inputs = [str(p) for p in run_dirs]
    records = collect_runs(run_dirs)
    groups = dataset_groups(records, dataset_name)
    # Versions compare per metric, within a dataset: decide each column first (it withholds
    # runs at another version), then refuse what stays incomparable.
    columns = {key: metric_columns(group) for key, group in groups.items()}
    for key, group in groups.items():
        refuse_mixed_protocols([r for r in group if r.ok], columns[key])
    # Written as a whole (spade_bench.io.staged_folder): a kill or a full disk mid-report leaves the
    # previous report as it was, never new figures beside old tables.
    names = {"markdown": "ablation.md", "csv": "ablation.csv", "latex": "ablation.tex", "summary": "summary.json"}
    with staged_folder(out_dir, what="report folder", owns=is_report_folder) as staging:
        figures_dir = staging / "figures" if figures else None
        sections = [build_section(key[0], group, settings, figures_dir, progress, columns[key], name=key[1])
                    for key, group in groups.items()]
        warnings = _warnings(sections)
        atomic_write_text(staging / names["markdown"], render_markdown(name, inputs, sections, warnings))
        csv = pd.concat([csv_rows(s.title, s.table, s.references, s.bootstrap.intervals)
                         for s in sections], ignore_index=True)
        atomic_write_text(staging / names["csv"], csv.to_csv(index=False))
        atomic_write_text(staging / names["latex"], render_latex(sections))
        figure_names = [p.name for s in sections for p in s.figures.values()]
        files = dict(names) | {"figures": [f"figures/{n}" for n in figure_names]}
        atomic_write_json(staging / names["summary"], summary_json(name, inputs, sections, warnings, settings,
                                                                   files))
    paths = {k: out_dir / n for k, n in names.items()}
    return {**paths, "figures": [out_dir / "figures" / n for n in figure_names], "warnings": warnings,
            "runs": len(records), "failed": sum(not r.ok for r in records)}


def is_report_folder(folder: Path) -> bool:
    """A folder `build_report` wrote (its summary.json names the inputs and the datasets): one
    a new report may replace. Any other folder with files is refused, never overwritten."""
    data, _ = try_read_json(Path(folder) / "summary.json")
    return isinstance(data, dict) and "inputs" in data and "datasets" in data
