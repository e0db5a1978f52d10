"""The report's "Evaluation images" paragraph: which validation files were scored, by which
rule, from which split, and whether they look like consecutive frames (metrics.json
`eval_subset`, written by eval/harness.py with spade_bench/data/subset.py).

Runs of one dataset scored on different files are refused before this is written
(`eval_subset_sha256` is one of reports.build.REFUSED_KEYS), so the section's runs share one
subset, or some predate the record.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

from reports.collect import RunRecord


def section_subset(records: Sequence[RunRecord]) -> Optional[dict[str, Any]]:
    """The evaluated runs' eval_subset record (they share one), or None when none has it."""
    for record in records:
        subset = (record.metrics or {}).get("eval_subset") if record.ok else None
        if isinstance(subset, dict):
            return subset
    return None


def subset_markdown(records: Sequence[RunRecord]) -> list[str]:
    """The "### Evaluation images" lines of a dataset section."""
    subset = section_subset(records)
    lines = ["### Evaluation images", ""]
    if subset is None:
        return lines + ["Not recorded: these runs were scored before metrics.json recorded which validation "
                        "files it scored (`eval_subset`); re-score them with `spade-bench eval --run RUN`.", ""]
    count, listed = subset.get("count"), subset.get("listed")
    sha = str(subset.get("sha256") or "")
    which = "all" if count == listed else f"{count} of the {listed}"
    text = (f"Scored: {which} validation items, the same files for every run (subset sha256 {sha[:12]}…; the "
            f"names are in each run's metrics.json `eval_subset.files`). Subset rule: {subset.get('rule')}. "
            f"Split: {subset.get('split')}.")
    check = subset.get("neighbours") or {}
    ratio = check.get("ratio")
    lines += [text, ""]
    if ratio is None:
        lines += [f"Consecutive-frame check: not run (fewer than 6 scored photos). Rule: {check.get('rule')}.", ""]
    elif check.get("consecutive"):
        lines += [f"**WARNING — the scored photos look like consecutive frames**: neighbouring photos differ by "
                  f"{check['neighbour_median']:.4f}, other pairs by {check['random_median']:.4f} (ratio "
                  f"{ratio:.2f} < {check['threshold']}). They are not independent samples, and the report's "
                  f"intervals treat them as independent, so they are too narrow. Rule: {check.get('rule')}.", ""]
    else:
        lines += [f"Consecutive-frame check: neighbouring scored photos differ by {check['neighbour_median']:.4f}, "
                  f"other pairs by {check['random_median']:.4f} (ratio {ratio:.2f}; the warning is below "
                  f"{check['threshold']}): no sign of consecutive frames.", ""]
    return lines
