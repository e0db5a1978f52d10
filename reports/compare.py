"""`spade-bench compare NEW... --reference REF`: is a rerun consistent with its reference?

Each side is run folders (or folders holding them) or a report folder / its summary.json (a
committed report ships no run folders: summary.json keeps each run's values, protocol,
experiment and numerics state, and per variant the mean replicates on the report's first
image resamples; reports.build.rerun_fields / replicates_json).

Per dataset, variant and metric the answer is
- **identical**: every new run's value equals the reference run of the same seed to the last
  digit (bits: the JSON floats round-trip exactly);
- **consistent**: the difference of the seed means lies inside the 95% interval built as the
  report builds its intervals (reports.bootstrap.seed_and_image_interval): the seed spread,
  pooled over both sides (a rerun is another draw of the same experiment, so one side with
  2 or more seeds measures it), plus the image part from the same image resamples on both
  sides (paired by image index);
- **inconsistent**: the interval excludes 0;
- **could not judge**, with why: no seed spread on either side and values that differ, a metric
  one side lacks, scored with another metric version, or per-image files missing.

It refuses (ReportError, exit 2) to compare runs of different experiments (config.json's
experiment keys but the seed; `allow_diff` names keys to tolerate) or evaluation protocols
(reports.build.REFUSED_KEYS, as a report refuses mixed protocols), naming what differs. It lists
the numerics-state fields (env.json and metrics.json "numerics"), code commits and metric
implementations that differ between the sides: the usual reasons for a rerun that is
consistent but not identical.

Exit codes: EXIT_OK 0 (all identical or consistent), EXIT_INCONSISTENT 1 (any inconsistent),
EXIT_CANNOT_JUDGE 3 (none inconsistent, some could not be judged); 2 is a refusal or bad input.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from reports.bootstrap import (BootstrapSettings, Interval, _run_replicates, bootstrap_metrics,
                               replicate_weights, seed_and_image_interval)
from reports.build import COMPARE_RESAMPLES, rerun_fields, weights_digest
from reports.collect import ReportError, collect_runs
from spade_bench.config import experiment_diff
from spade_bench.metrics import get_metric, metric_names
from spade_bench.run_folder import RunFolder

EXIT_OK, EXIT_INCONSISTENT, EXIT_CANNOT_JUDGE = 0, 1, 3
IDENTICAL, CONSISTENT, INCONSISTENT, CANNOT_JUDGE = "identical", "consistent", "inconsistent", "could not judge"
NO_SPREAD = ("no seed spread to judge by: rerun with --seeds 0,1 or compare against a multi-seed "
             "reference")
SUMMARY = "summary.json"


@dataclass
class SideRun:
    """One evaluated run as compare sees it (from a run folder or a summary.json entry)."""

    label: str
    dataset: str
    variant: str
    seed: Optional[int]
    values: dict[str, float]
    metric_versions: dict[str, str]
    protocol: dict[str, Any]
    experiment: dict[str, Any]
    numerics: dict[str, dict]
    code: str
    record: Any = None                 # the RunRecord when the side is run folders


@dataclass
class Side:
    """The runs of one side, and (summary.json) the stored replicates per dataset."""

    name: str                          # "reference" | "new"
    source: str
    runs: list[SideRun]
    replicates: dict[str, dict] = field(default_factory=dict)   # dataset -> replicates_json
    from_summary: bool = False


@dataclass
class Judgement:
    dataset: str
    variant: str
    metric: str
    answer: str
    why: str = ""
    new_seeds: list = field(default_factory=list)
    reference_seeds: list = field(default_factory=list)
    new_mean: Optional[float] = None
    reference_mean: Optional[float] = None
    interval: Optional[Interval] = None

    def to_json(self) -> dict:
        return {"dataset": self.dataset, "variant": self.variant, "metric": self.metric,
                "answer": self.answer, "why": self.why, "new_seeds": self.new_seeds,
                "reference_seeds": self.reference_seeds, "new_mean": self.new_mean,
                "reference_mean": self.reference_mean,
                "interval": None if self.interval is None else self.interval.to_json()}


@dataclass
class CompareResult:
    judgements: list[Judgement]
    differences: dict[str, dict[str, list]]      # kind -> field -> [reference values, new values]
    one_sided: dict[str, dict[str, list[str]]]   # kind -> {"reference only": [...], "new only": [...]}
    notes: list[str]
    new: str
    reference: str

    @property
    def exit_code(self) -> int:
        answers = {j.answer for j in self.judgements}
        if INCONSISTENT in answers:
            return EXIT_INCONSISTENT
        if CANNOT_JUDGE in answers or not self.judgements:
            return EXIT_CANNOT_JUDGE
        return EXIT_OK

    @property
    def overall(self) -> str:
        return {EXIT_OK: "consistent" if any(j.answer == CONSISTENT for j in self.judgements) else "identical",
                EXIT_INCONSISTENT: "inconsistent", EXIT_CANNOT_JUDGE: "could not judge"}[self.exit_code]

    def to_json(self) -> dict:
        """JSON-safe (non-finite numbers as null)."""
        return _finite({"new": self.new, "reference": self.reference, "overall": self.overall,
                        "exit_code": self.exit_code, "judgements": [j.to_json() for j in self.judgements],
                        "differences": self.differences, "one_sided": self.one_sided, "notes": self.notes})

    def text(self) -> str:
        lines = [f"compare: {self.new} against the reference {self.reference}"]
        current = None
        for j in self.judgements:
            if (j.dataset, j.variant) != current:
                current = (j.dataset, j.variant)
                lines.append(f"{j.dataset} / {j.variant} (seeds: new {_seeds(j.new_seeds)}, "
                             f"reference {_seeds(j.reference_seeds)}):")
            lines.append("  " + _judgement_line(j))
        for kind, fields in self.differences.items():
            if fields:
                lines.append(f"{kind} that differ:")
                lines += [f"  {name}: reference {_values(ref)} vs new {_values(new)}"
                          for name, (ref, new) in fields.items()]
        for kind, sides in self.one_sided.items():
            for side, names in sides.items():
                if names:
                    lines.append(f"{kind} recorded on the {side} side only: {', '.join(names)}")
        lines += [f"note: {n}" for n in self.notes]
        lines.append(f"overall: {self.overall} (exit {self.exit_code})")
        return "\n".join(lines)


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _seeds(seeds: list) -> str:
    return ",".join("?" if s is None else str(s) for s in seeds) or "none"


def _values(values: list) -> str:
    return " / ".join(json.dumps(v) if not isinstance(v, str) else v for v in values)


def _judgement_line(j: Judgement) -> str:
    short = get_metric(j.metric).short if j.metric in metric_names() else j.metric
    head = f"{short}: {j.answer}"
    if j.new_mean is not None and j.reference_mean is not None:
        head += f" (new {j.new_mean:.6g}, reference {j.reference_mean:.6g}"
        if j.interval is not None and j.answer in (CONSISTENT, INCONSISTENT):
            iv = j.interval
            head += (f"; difference {iv.point:+.4g}, {iv.confidence:.0%} interval "
                     f"[{iv.low:+.4g}, {iv.high:+.4g}], {iv.method}")
        head += ")"
    return head + (f": {j.why}" if j.why else "")


# --------------------------------------------------------------------------- reading the sides

def _is_summary(path: Path) -> bool:
    return path.is_file() and path.suffix == ".json"


def _summary_path(path: Path) -> Optional[Path]:
    """The summary.json a path names (the file, or a report folder's), else None."""
    if _is_summary(path):
        return path
    if path.is_dir() and (path / SUMMARY).is_file() and not RunFolder(path).is_run():
        return path / SUMMARY
    return None


def read_side(paths: Sequence[str | Path], name: str) -> Side:
    """Run folders (or folders holding them), or exactly one report folder / summary.json."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ReportError(f"no {name} given; pass run folders, a report folder or its summary.json")
    summaries = [p for p in paths if _summary_path(p) is not None]
    if summaries:
        if len(paths) > 1:
            raise ReportError(f"{name}: pass one report folder (or summary.json), or run folders, "
                              f"not both or several: got {', '.join(map(str, paths))}")
        return _side_from_summary(_summary_path(paths[0]), name)
    records = [r for r in collect_runs(paths) if r.ok]
    if not records:
        raise ReportError(f"{name}: no evaluated runs under {', '.join(map(str, paths))}; run "
                          f"`spade-bench eval --run RUN` first")
    runs = []
    for r in records:
        fields = rerun_fields(r)
        runs.append(SideRun(r.label, r.dataset, r.variant, r.seed, fields["values"],
                            fields["metric_versions"] or {}, fields["protocol"], fields["experiment"],
                            fields["numerics"], r.code, record=r))
    return Side(name, ", ".join(map(str, paths)), runs)


def _side_from_summary(path: Path, name: str) -> Side:
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ReportError(f"{path}: cannot read it as JSON ({e}); pass a report folder's summary.json") from None
    runs = []
    for entry in summary.get("runs") or []:
        if entry.get("status") != "ok":
            continue
        if "values" not in entry:
            raise ReportError(
                f"{path} was written before summary.json kept per-run values for `spade-bench compare` "
                f"(its runs have no 'values'); rebuild it with `spade-bench report RUNS --out {path.parent}`, "
                f"or compare against the run folders")
        label = f"{entry.get('variant')}/seed{'?' if entry.get('seed') is None else entry.get('seed')}"
        runs.append(SideRun(label, entry.get("dataset", "unknown"), entry.get("variant"), entry.get("seed"),
                            entry.get("values") or {}, entry.get("metric_versions") or {},
                            entry.get("protocol") or {}, entry.get("experiment") or {},
                            entry.get("numerics") or {}, entry.get("code", "not recorded")))
    if not runs:
        raise ReportError(f"{path} lists no evaluated runs; nothing to compare")
    replicates = {ds: section.get("replicates") for ds, section in (summary.get("datasets") or {}).items()
                  if section.get("replicates")}
    return Side(name, str(path), runs, replicates, from_summary=True)


# --------------------------------------------------------------------------- refusals

def _refuse_other_experiments(new: Side, reference: Side, allow_diff: Sequence[str]) -> None:
    """Every run of one variant (both sides) must be the same experiment but for the seed."""
    problems = []
    for dataset, variant in sorted({(r.dataset, r.variant) for r in new.runs}):
        runs = [(side, r) for side in (reference, new) for r in side.runs
                if (r.dataset, r.variant) == (dataset, variant)]
        first_side, first = runs[0]
        for side, run in runs[1:]:
            diff = {k: v for k, v in experiment_diff(first.experiment, run.experiment).items()
                    if k not in allow_diff}
            if diff:
                listed = "; ".join(f"{k}: {json.dumps(a)} ({first_side.name} {first.label}) vs "
                                   f"{json.dumps(b)} ({side.name} {run.label})" for k, (a, b) in diff.items())
                problems.append(f"{dataset}/{variant}: {listed}")
                break
    if problems:
        raise ReportError(
            "these runs are not reruns of one experiment, so compare would judge a change, not a "
            "rerun: " + " | ".join(problems) + ". Compare reruns of the same config (only the seed, "
            "threads, device and logging may differ), or name the keys you mean to change with "
            "--allow-diff KEY")


def _refuse_other_protocols(new: Side, reference: Side) -> None:
    runs = [(side, r) for side in (reference, new) for r in side.runs
            if r.dataset in {n.dataset for n in new.runs}]
    differ = []
    for dataset in sorted({r.dataset for _, r in runs}):
        keys = sorted({k for _, r in runs if r.dataset == dataset for k in r.protocol})
        for key in keys:
            values: dict[str, list[str]] = {}
            for side, run in runs:
                if run.dataset == dataset and key in run.protocol:
                    values.setdefault(json.dumps(run.protocol[key], sort_keys=True), []).append(
                        f"{side.name} {run.label}")
            if len(values) > 1:
                differ.append(f"{dataset} {key}: " + " vs ".join(
                    f"{v} ({', '.join(who[:3])}{', …' if len(who) > 3 else ''})" for v, who in values.items()))
    if differ:
        raise ReportError(
            "the two sides were scored under different evaluation protocols, so their numbers are not "
            "comparable: " + "; ".join(differ) + ". Score the new runs with the reference's evaluator "
            "and eval settings (`spade-bench eval --run RUN --set eval.segmenter=...`)")


# --------------------------------------------------------------------------- differences

def _side_values(runs: Sequence[SideRun], getter) -> dict[str, list]:
    out: dict[str, list] = {}
    for run in runs:
        for key, value in getter(run).items():
            out.setdefault(key, [])
            if value not in out[key]:
                out[key].append(value)
    return out


def _differences(new: Side, reference: Side) -> tuple[dict, dict]:
    """({kind: {field: [reference values, new values]}}, {kind: {side only: [fields]}})."""
    new_runs = new.runs
    keys = {(r.dataset, r.variant) for r in new_runs}
    ref_runs = [r for r in reference.runs if (r.dataset, r.variant) in keys] or reference.runs
    getters = {
        "numerics-state fields": lambda r: {f"{record}: {k}": v for record, state in r.numerics.items()
                                            for k, v in (state or {}).items()},
        "code commits": lambda r: {"commit": r.code},
        "metric implementations": lambda r: dict(r.metric_versions),
    }
    differences, one_sided = {}, {}
    for kind, getter in getters.items():
        ref, now = _side_values(ref_runs, getter), _side_values(new_runs, getter)
        differences[kind] = {k: [ref[k], now[k]] for k in sorted(set(ref) & set(now))
                             if sorted(map(json.dumps, ref[k])) != sorted(map(json.dumps, now[k]))}
        one_sided[kind] = {"reference": sorted(set(ref) - set(now)), "new": sorted(set(now) - set(ref))}
    return differences, one_sided


# --------------------------------------------------------------------------- judging

def _version(text: Optional[str]) -> Optional[str]:
    return None if text is None else str(text).split(" (")[0]


def _replicates_of(side: Side, dataset: str, variant: str, runs: list[SideRun], metric: str,
                   draw: dict, cache: dict, notes: list[str]) -> Optional[np.ndarray]:
    """[1, stored] mean replicates of these runs on the draw's resamples, or None (why in notes)."""
    if side.from_summary:
        stored = side.replicates.get(dataset) or {}
        values = ((stored.get("by_variant") or {}).get(variant) or {}).get(metric)
        if values is None:
            return None
        expected = sorted((stored.get("runs") or {}).get(variant) or [])
        if expected and expected != sorted(r.label for r in runs):
            notes.append(f"{side.name} {dataset}/{variant}: the stored replicates average "
                         f"{', '.join(expected)}, not exactly the runs compared")
        return np.array(str(values).split(), dtype=np.float64)[None, :draw["stored"]]
    reps = []
    for run in runs:
        if run.label not in cache:
            cache[run.label] = _run_replicates(run.record, draw["weights"], draw["fid_weights"], notes, [])[0]
        if metric not in cache[run.label]:
            return None
        reps.append(cache[run.label][metric][:draw["stored"]])
    return np.mean(reps, axis=0)[None, :]


def _draw(new: Side, reference: Side, dataset: str, num_images: Optional[int],
          settings: BootstrapSettings) -> tuple[Optional[dict], str]:
    """The image resamples both sides are replicated on: a summary's stored draw, else `settings`."""
    stored = [s.replicates.get(dataset) for s in (reference, new) if s.from_summary]
    if any(d is None for d in stored):
        return None, ("the report's summary.json keeps no replicates for this dataset (a report "
                      "without spade runs, or written before compare)")
    if len(stored) == 2 and any(stored[0].get(k) != stored[1].get(k)
                                for k in ("num_images", "seed", "replicates", "stored")):
        return None, "the two reports drew their image resamples differently (seed, count or images)"
    if stored:
        d = stored[0]
        s = BootstrapSettings(replicates=d["replicates"], fid_replicates=d["fid_replicates"], seed=d["seed"])
        weights, fid_weights = replicate_weights(d["num_images"], s)
        if weights_digest(weights[:d["stored"]]) != d["weights_sha256"]:
            return None, ("this numpy draws other image resamples than the one that wrote the report "
                          "(weights_sha256 differs)")
        stored_count = d["stored"]
        return {"weights": weights[:stored_count], "fid_weights": fid_weights[:stored_count],
                "stored": stored_count, "num_images": d["num_images"]}, ""
    if num_images is None:
        return None, "no per-image files to resample"
    weights, fid_weights = replicate_weights(num_images, settings)
    stored_count = min(COMPARE_RESAMPLES, settings.replicates)
    return {"weights": weights[:stored_count], "fid_weights": fid_weights[:stored_count],
            "num_images": num_images, "stored": stored_count}, ""


def _num_images(runs: Sequence[SideRun]) -> Optional[int]:
    values = {r.protocol.get("num_images") for r in runs} - {None}
    return next(iter(values)) if len(values) == 1 else None


def compare(new_paths: Sequence[str | Path], reference_paths: Sequence[str | Path], *,
            allow_diff: Sequence[str] = (), settings: BootstrapSettings = BootstrapSettings(
                replicates=COMPARE_RESAMPLES, fid_replicates=COMPARE_RESAMPLES)) -> CompareResult:
    """Judge every (dataset, variant, metric) the new runs hold against the reference.

    Args:
        new_paths, reference_paths: run folders (or their parents), or one report folder /
            summary.json.
        allow_diff: experiment keys allowed to differ (a deliberate change to test).
        settings: the image resamples when neither side is a summary.json (which brings its own).
    """
    reference = read_side(reference_paths, "reference")
    new = read_side(new_paths, "new")
    _refuse_other_experiments(new, reference, allow_diff)
    _refuse_other_protocols(new, reference)
    differences, one_sided = _differences(new, reference)
    notes: list[str] = []
    if allow_diff:
        notes.append(f"experiment keys allowed to differ: {', '.join(allow_diff)}")
    judgements: list[Judgement] = []
    cache_new: dict = {}
    cache_ref: dict = {}
    replicated = set(bootstrap_metrics())
    for dataset, variant in sorted({(r.dataset, r.variant) for r in new.runs}):
        new_runs = sorted((r for r in new.runs if (r.dataset, r.variant) == (dataset, variant)),
                          key=lambda r: (r.seed is None, r.seed))
        ref_runs = sorted((r for r in reference.runs if (r.dataset, r.variant) == (dataset, variant)),
                          key=lambda r: (r.seed is None, r.seed))
        if not ref_runs:
            judgements.append(Judgement(dataset, variant, "every metric", CANNOT_JUDGE,
                                        f"the reference has no evaluated {variant} runs on {dataset}",
                                        [r.seed for r in new_runs], []))
            continue
        draw, no_draw = _draw(new, reference, dataset, _num_images(new_runs + ref_runs), settings)
        for metric in metric_names():
            judgement = _judge(dataset, variant, metric, new, reference, new_runs, ref_runs, draw, no_draw,
                               replicated, cache_new, cache_ref, notes)
            if judgement is not None:
                judgements.append(judgement)
    not_rerun = sorted({f"{r.dataset}/{r.variant}" for r in reference.runs}
                       - {f"{r.dataset}/{r.variant}" for r in new.runs})
    if not_rerun:
        notes.append(f"reference variants not rerun (not judged): {', '.join(not_rerun)}")
    return CompareResult(judgements, differences, one_sided, list(dict.fromkeys(notes)), new.source,
                         reference.source)


def _judge(dataset, variant, metric, new, reference, new_runs, ref_runs, draw, no_draw, replicated,
           cache_new, cache_ref, notes) -> Optional[Judgement]:
    have_new = [r for r in new_runs if metric in r.values]
    have_ref = [r for r in ref_runs if metric in r.values]
    if not have_new and not have_ref:
        return None
    j = Judgement(dataset, variant, metric, CANNOT_JUDGE, new_seeds=[r.seed for r in have_new],
                  reference_seeds=[r.seed for r in have_ref])
    if not have_new or not have_ref:
        j.why = f"only the {'new' if have_new else 'reference'} side scored it"
        return j
    j.new_mean = float(np.mean([r.values[metric] for r in have_new]))
    j.reference_mean = float(np.mean([r.values[metric] for r in have_ref]))
    versions = {_version(r.metric_versions.get(metric)) for r in have_new + have_ref}
    if len(versions - {None}) > 1:
        j.why = f"scored with different versions ({', '.join(sorted(versions - {None}))}); re-score one side"
        return j
    by_seed = {r.seed: r.values[metric] for r in have_ref}
    if all(r.seed in by_seed and r.values[metric] == by_seed[r.seed] for r in have_new):
        j.answer = IDENTICAL
        if len(have_new) < len(have_ref):
            j.why = f"{len(have_new)} of the reference's {len(have_ref)} seeds rerun"
        return j
    if max(len(have_new), len(have_ref)) < 2:
        j.why = NO_SPREAD
        return j
    if metric not in replicated:
        j.why = "the metric has no per-image replicate, so no image part"
        return j
    if draw is None:
        j.why = f"no image part: {no_draw}"
        return j
    reps_new = _replicates_of(new, dataset, variant, have_new, metric, draw, cache_new, notes)
    reps_ref = _replicates_of(reference, dataset, variant, have_ref, metric, draw, cache_ref, notes)
    if reps_new is None or reps_ref is None:
        j.why = "no image part: the per-image files (or stored replicates) of a side are missing"
        return j
    interval = seed_and_image_interval(reps_new, reps_ref, [r.values[metric] for r in have_new],
                                       [r.values[metric] for r in have_ref], pooled=True)
    j.interval = interval
    if math.isnan(interval.low):
        j.why = "the image part could not be measured"
        return j
    j.answer = INCONSISTENT if interval.excludes_zero else CONSISTENT
    return j
