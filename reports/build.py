"""Build an ablation report from run directories: ablation.md, .csv, .tex, summary.json, figures.

`build_report(run_dirs, out_dir)` reads every run below `run_dirs` (reports.collect),
groups them by dataset (runs on different datasets are never compared), and writes per
dataset the main table, failed runs, bootstrap differences to spade, agreement with the
paper, figures and the evaluation protocol. Runs that disagree on the protocol are
flagged at the top of the report: their scores are not comparable.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from reports import figures as figs
from reports.bootstrap import BASELINE, BootstrapResult, BootstrapSettings, bootstrap_differences
from reports.collect import RunRecord, collect_runs
from reports.paper import PAPER_SEGMENTERS, Verdict, judge
from reports.tables import (METRICS, csv_rows, failed_runs_table, has_paper_columns,
                            latex_escape, main_table, reference_values, render_differences,
                            render_main, to_latex, to_markdown)
from spade_bench.io import atomic_write_json, atomic_write_text

# metrics.json keys that define the evaluation: runs that differ here are not comparable.
PROTOCOL_KEYS = ("fid_protocol", "fid_extractor_sha256", "segmenter", "segmenter_sha256",
                 "eval_size", "generation_size", "image_resize", "label_resize", "num_images",
                 "seeds", "metric_versions", "real_stats")
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
    figures: dict[str, Path] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in self.dataset)


# --------------------------------------------------------------------------- protocol

def _protocol_value(record: RunRecord, key: str) -> Any:
    metrics = record.metrics or {}
    if key == "real_stats":
        name = (metrics.get("files") or {}).get("real_stats")
        return Path(name).name if name else None
    if key == "checkpoint_step":
        return metrics.get("checkpoint_step")
    if key in TRAINING_KEYS or key in HARDWARE_KEYS:
        return (metrics.get("run") or {}).get(key)
    return (metrics.get("protocol") or {}).get(key)


def protocol_summary(records: Sequence[RunRecord]) -> dict[str, dict]:
    """key -> {"values": {json value: [run labels]}, "kind": protocol|training|hardware}."""
    out = {}
    for kind, keys in (("protocol", PROTOCOL_KEYS), ("training", TRAINING_KEYS),
                       ("hardware", HARDWARE_KEYS)):
        for key in keys:
            values: dict[str, list[str]] = {}
            for record in records:
                if record.ok:
                    value = json.dumps(_protocol_value(record, key), sort_keys=True)
                    values.setdefault(value, []).append(record.label)
            out[key] = {"kind": kind, "values": values}
    return out


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
             "perceptual": "perceptual network", "ema": "EMA", "hardware": "hardware"}
    parts = []
    for key, info in protocol.items():
        values = info["values"]
        if not values:
            continue
        if len(values) == 1:
            parts.append(f"{names[key]}: {_show(next(iter(values)))}")
        else:
            listed = "; ".join(f"{_show(v)} ({', '.join(runs)})" for v, runs in values.items())
            parts.append(f"**{names[key]} DIFFERS: {listed}**")
    return "; ".join(parts) + "." if parts else "No evaluated runs, so no protocol to report."


# --------------------------------------------------------------------------- sections

def build_section(dataset: str, records: list[RunRecord], settings: BootstrapSettings,
                  figures_dir: Optional[Path], progress: bool) -> DatasetSection:
    table = main_table(records, dataset)
    references = reference_values(records)
    bootstrap = bootstrap_differences([r for r in records if r.ok], settings, progress=progress)
    present = {v for v in table.index if table.loc[v, "ok"] > 0}
    params = {v: (None if math.isnan(table.loc[v, "generator_params_mean"])
                  else float(table.loc[v, "generator_params_mean"])) for v in table.index}
    verdicts, untested = judge(bootstrap.intervals, present, params)
    section = DatasetSection(dataset, records, table, references, bootstrap, verdicts, untested,
                             protocol_summary(records))
    if figures_dir is not None:
        slug = section.slug
        made = {"samples": figs.sample_grid(records, figures_dir / f"{slug}_samples.png"),
                "losses": figs.loss_curves(records, figures_dir / f"{slug}_losses.png"),
                "metrics": figs.metric_bars(table, references, figures_dir / f"{slug}_metrics.png")}
        section.figures = {k: v for k, v in made.items() if v is not None}
    return section


def _warnings(sections: Sequence[DatasetSection]) -> list[str]:
    out = []
    for s in sections:
        where = f"{s.dataset}: " if len(sections) > 1 else ""
        protocol = protocol_mismatches(s.protocol, "protocol")
        if protocol:
            out.append(f"**WARNING — {where}the runs disagree on the evaluation protocol "
                       f"({', '.join(protocol)}): their scores are NOT comparable.** "
                       f"See the protocol footnote for which run used what.")
        training = protocol_mismatches(s.protocol, "training")
        if training:
            out.append(f"**Warning — {where}training settings differ between runs "
                       f"({', '.join(training)}): differences between variants are confounded.**")
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

def _bootstrap_explanation(result: BootstrapResult) -> str:
    s = result.settings
    fid = min(s.fid_replicates, s.replicates)
    return (f"Δ = variant − {BASELINE}, mean over seeds. [low, high] is the {s.confidence:.0%} "
            f"percentile interval of a hierarchical paired bootstrap: each of B = {s.replicates} "
            f"replicates resamples each variant's seeds, then the {result.num_images} validation "
            f"images (one image resample shared by every run, so pairs match by image index), "
            f"and recomputes mIoU and accuracy from per-image tp/fp/fn sums and KID from the "
            f"features; FID uses the first {fid} replicates (each needs an eigendecomposition). "
            f"RNG seed {s.seed}. * = the interval excludes 0, so the gap is unlikely to be "
            f"seed or image luck. With one seed an interval reflects image sampling only.")


_METRIC_NAMES = {"miou": "mIoU", "pixel_accuracy": "accuracy", "fid": "FID", "kid": "KID"}


def _section_markdown(s: DatasetSection) -> str:
    lines = [f"## Dataset: {s.dataset}", "", "### Main table", "",
             to_markdown(render_main(s.table, s.references, s.dataset)), ""]
    lines.append("Cells: mean ± sample std over evaluated seeds; \"seeds\" counts evaluated runs "
                 "(failed runs in brackets are never averaged); (n=…) where a value is missing "
                 "for some seeds. **Bold**: best mean per column — higher mIoU, pixel accuracy "
                 "and images/s; lower FID, KID and peak memory; generator parameters are not "
                 "marked. Reference rows come from metrics.json `references`.")
    if has_paper_columns(s.dataset):
        segmenter = PAPER_SEGMENTERS.get(s.dataset, "its own segmenter")
        lines.append(f"\"paper\": Table 1 of Park et al. 2019 (spade → SPADE, pix2pixhd → "
                     f"pix2pixHD), scored with {segmenter}; ours uses a different segmenter and "
                     f"schedule, so compare orderings rather than absolute values.")
    else:
        lines.append(f"The paper reports no numbers on {s.dataset}, so there are no paper columns.")
    lines.append("")

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
    for v in s.verdicts:
        per = ", ".join(f"{_METRIC_NAMES[m]} {r}" for m, r in v.per_metric.items()) or "no intervals"
        weak = (v.finding.kind == "same" and v.verdict == "agrees"
                and "no interval excludes 0, which with few seeds or images is weak evidence")
        caveat = v.finding.caveat and f"caveat: {v.finding.caveat}"
        extra = "".join(f"; {x}" for x in (weak, v.params_note, caveat) if x)
        lines.append(f"- **{v.verdict}** — {v.finding.text} (paper {v.finding.source}; "
                     f"{v.finding.better} vs {v.finding.worse}): {per}{extra}.")
    if not s.verdicts:
        lines.append("- No finding of the paper can be checked: it needs both of its variants.")
    if s.untested:
        lines.append("- Not tested here (a variant was not run or not evaluated): " + "; ".join(
            f"{f.text} ({f.better} vs {f.worse})" for f in s.untested) + ".")
    lines.append("")

    lines += ["### Figures", ""]
    captions = {"samples": "Validation label maps rendered by every variant (lowest seed)",
                "losses": "Training losses (moving average; dashed = failed run)",
                "metrics": "Metrics per variant (error bars: std over seeds)"}
    for key, path in s.figures.items():
        lines += [f"![{captions[key]}](figures/{path.name})", f"*{captions[key]}.*", ""]
    if not s.figures:
        lines += ["No figures.", ""]

    lines += ["### Protocol", "", protocol_footnote(s.protocol), ""]
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
        lines += [f"Runs on {len(sections)} datasets ({', '.join(s.dataset for s in sections)}) "
                  f"are reported separately and never compared.", ""]
    if warnings:
        lines += ["\n>\n".join(f"> {w}" for w in warnings), ""]
    lines += [_section_markdown(s) for s in sections]
    return "\n".join(lines).rstrip() + "\n"


def render_latex(sections: Sequence[DatasetSection]) -> str:
    parts = ["% spade-bench ablation tables; needs \\usepackage{booktabs,graphicx}", ""]
    for s in sections:
        main = render_main(s.table, s.references, s.dataset, latex=True)
        parts.append(to_latex(
            main, caption=f"SPADE ablation on {latex_escape(s.dataset)}: mean $\\pm$ std over seeds; bold = "
                          f"best per column.", label=f"tab:ablation-{s.slug}",
            midrule_before=len(s.table)))
        if s.bootstrap.intervals:
            s_ = s.bootstrap.settings
            parts.append(to_latex(
                render_differences(s.bootstrap.intervals, latex=True),
                caption=f"Differences to {BASELINE} on {latex_escape(s.dataset)} with "
                        f"{100 * s_.confidence:.0f}\\% "
                        f"hierarchical bootstrap intervals (B={s_.replicates}; FID "
                        f"B={min(s_.fid_replicates, s_.replicates)}); $^{{*}}$: excludes 0.",
                label=f"tab:ablation-diff-{s.slug}"))
        footnote = protocol_footnote(s.protocol).replace("**", "")
        parts.append(f"% Protocol ({s.dataset}):\n\\noindent\\footnotesize Protocol: "
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


def summary_json(name: str, inputs: Sequence[str], sections: Sequence[DatasetSection],
                 warnings: Sequence[str], settings: BootstrapSettings, files: dict) -> dict:
    datasets = {}
    for s in sections:
        datasets[s.dataset] = {
            "table": s.table.reset_index().to_dict(orient="records"),
            "references": s.references,
            "differences_to": BASELINE,
            "differences": {v: {m: iv.to_json() for m, iv in per.items()}
                            for v, per in s.bootstrap.intervals.items()},
            "bootstrap_num_images": s.bootstrap.num_images,
            "bootstrap_notes": s.bootstrap.notes,
            "consistency_problems": s.bootstrap.consistency,
            "findings": [v.to_json() for v in s.verdicts],
            "findings_not_tested": [f.text for f in s.untested],
            "protocol": {k: {"kind": v["kind"],
                             "values": [{"value": json.loads(j), "runs": runs}
                                        for j, runs in v["values"].items()]}
                         for k, v in s.protocol.items()},
            "protocol_mismatches": protocol_mismatches(s.protocol, "protocol"),
            "training_mismatches": protocol_mismatches(s.protocol, "training"),
            "evaluator_warnings": evaluator_warnings(s.records),
            "figures": {k: f"figures/{p.name}" for k, p in s.figures.items()},
        }
    return _clean({
        "schema": 1, "name": name, "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "inputs": list(inputs), "bootstrap": asdict(settings),
        "metric_columns": [asdict(m) for m in METRICS],
        "runs": [r.to_json() for s in sections for r in s.records],
        "warnings": list(warnings), "datasets": datasets, "files": files,
    })


# --------------------------------------------------------------------------- entry point

def build_report(run_dirs: Sequence[str | Path], out_dir: str | Path, name: Optional[str] = None,
                 *, settings: BootstrapSettings = BootstrapSettings(), figures: bool = True,
                 progress: bool = True) -> dict[str, Any]:
    """Read the runs under `run_dirs` and write the report into `out_dir`.

    `figures=False` skips the PNGs (tables only, a few seconds faster).

    Returns {"markdown", "csv", "latex", "summary": Path, "figures": [Path],
    "warnings": [str], "runs": int, "failed": int}. Raises ReportError when no run
    directory is found.
    """
    out_dir = Path(out_dir)
    name = name or out_dir.name
    inputs = [str(p) for p in run_dirs]
    records = collect_runs(run_dirs)
    figures_dir = out_dir / "figures" if figures else None
    sections = [build_section(dataset, [r for r in records if r.dataset == dataset], settings,
                              figures_dir, progress)
                for dataset in sorted({r.dataset for r in records})]
    warnings = _warnings(sections)

    paths = {"markdown": out_dir / "ablation.md", "csv": out_dir / "ablation.csv",
             "latex": out_dir / "ablation.tex", "summary": out_dir / "summary.json"}
    atomic_write_text(paths["markdown"], render_markdown(name, inputs, sections, warnings))
    csv = pd.concat([csv_rows(s.dataset, s.table, s.references, s.bootstrap.intervals)
                     for s in sections], ignore_index=True)
    atomic_write_text(paths["csv"], csv.to_csv(index=False))
    atomic_write_text(paths["latex"], render_latex(sections))
    figure_paths = [p for s in sections for p in s.figures.values()]
    files = {k: p.name for k, p in paths.items()} | {
        "figures": [f"figures/{p.name}" for p in figure_paths]}
    atomic_write_json(paths["summary"], summary_json(name, inputs, sections, warnings, settings,
                                                     files))
    return {**paths, "figures": figure_paths, "warnings": warnings, "runs": len(records),
            "failed": sum(not r.ok for r in records)}
