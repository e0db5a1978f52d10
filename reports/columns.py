"""Which runs fill each metric column, and why the others do not: versions compare per metric.

A report reads runs scored at different times: a metric added after some runs were scored,
or a metric whose computation changed (its version in spade_bench/metrics/<name>.py was
bumped). Nothing is refused for that; per metric:

- a run whose metrics.json has no value for it is left out of its column ("not scored");
- among the runs that have it, the column shows one version: this code's when any run has
  it, else the newest recorded; a run scored with another version is left out of the column
  (RunRecord.withheld), and of its mean, interval and verdict;
- the report prints "-" for what is missing and a note naming the runs and the reason, with
  the command that scores them (`spade-bench eval --run RUN --metric NAME` keeps the other
  scores; a relaunched sweep scores exactly what is missing).

Runs at the shown version whose implementations differ in other ways (the package versions
in protocol.metric_versions) are not comparable: reports.build refuses them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from reports.collect import RunRecord
from spade_bench.metrics import get_metric, list_metrics, version_number, version_token


@dataclass
class MetricColumn:
    """One metric's column over a set of runs.

    Args:
        name: the metric.
        version: the version the column shows (None when no run recorded one).
        current: this code's version of the metric.
        shown: labels of the runs whose value is in the column.
        missing: run label -> why its cell is empty.
        implementations: full protocol.metric_versions entry -> labels, over the shown runs.
    """

    name: str
    version: Optional[str]
    current: str
    shown: list[str] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)
    implementations: dict[str, list[str]] = field(default_factory=dict)

    @property
    def outdated(self) -> bool:
        """The column shows another version than this code computes."""
        return self.version is not None and self.version != self.current

    def to_json(self) -> dict:
        return {"version": self.version, "current": self.current, "runs": list(self.shown),
                "missing": dict(self.missing), "implementations": dict(self.implementations)}


def _recorded(record: RunRecord, name: str) -> tuple[bool, Optional[str]]:
    """(has a value, its protocol.metric_versions entry) from the run's metrics.json."""
    metrics = record.metrics or {}
    values = metrics.get("metrics") if isinstance(metrics.get("metrics"), dict) else {}
    protocol = metrics.get("protocol") if isinstance(metrics.get("protocol"), dict) else {}
    versions = protocol.get("metric_versions") if isinstance(protocol.get("metric_versions"), dict) else {}
    entry = versions.get(name)
    return values.get(name) is not None, entry if isinstance(entry, str) else None


def metric_columns(records: Sequence[RunRecord]) -> dict[str, MetricColumn]:
    """Per registered metric, which evaluated runs fill its column; sets `withheld` on the runs
    left out for their version (and clears it on the others)."""
    ok = [r for r in records if r.ok]
    columns = {}
    for metric in list_metrics():
        name = metric.name
        have = {}
        for record in ok:
            record.withheld.pop(name, None)
            present, entry = _recorded(record, name)
            if present:
                have[record.label] = (record, entry)
        tokens = {version_token(entry) for _, entry in have.values()} - {None}
        if metric.version in tokens:
            shown_version = metric.version
        elif tokens:
            shown_version = max(tokens, key=lambda t: (version_number(t) or -1, t))
        else:
            shown_version = None
        column = MetricColumn(name, shown_version, metric.version)
        for record in ok:
            if record.label not in have:
                column.missing[record.label] = "not scored"
                continue
            _, entry = have[record.label]
            token = version_token(entry)
            if shown_version is not None and token != shown_version:
                why = f"scored with {token or 'an unrecorded version'}, the column shows {shown_version}"
                record.withheld[name] = why
                column.missing[record.label] = why
                continue
            column.shown.append(record.label)
            if entry is not None:
                column.implementations.setdefault(entry, []).append(record.label)
        columns[name] = column
    return columns


def _runs(labels: Sequence[str], total: int) -> str:
    return "every run" if len(labels) == total else ", ".join(labels)


def column_notes(columns: dict[str, MetricColumn], evaluated: int) -> list[str]:
    """One line per metric whose column misses runs or shows an older version, saying which runs,
    why, and what scores them."""
    lines = []
    for name, column in columns.items():
        label = get_metric(name).label
        command = f"`spade-bench eval --run RUN --metric {name}` (keeps the other scores)"
        by_reason: dict[str, list[str]] = {}
        for run, why in column.missing.items():
            by_reason.setdefault(why, []).append(run)
        for why, runs in by_reason.items():
            lines.append(f"{label} – for {_runs(runs, evaluated)}: {why}; {command}, or relaunch the sweep, "
                         f"which scores only what is missing.")
        if column.outdated and column.shown:
            lines.append(f"{label}: the column shows {column.version}; this code computes {column.current}, "
                         f"so these values do not compare with newly scored runs; {command}.")
    return lines
