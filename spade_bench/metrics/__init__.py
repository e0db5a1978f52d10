"""Metric registry: finds every metric, then looks them up by name.

Metrics are found, never listed by hand (as spade_bench.registry finds variants):
- every module of this package, by a package scan; each must register at least one metric
  (a module whose name starts with "_" is a helper and is skipped);
- every module named by an `importlib.metadata` entry point in the group
  `spade_bench.metrics`, so another installed package adds metrics without this one
  importing it.

A duplicate name (or alias) is an error naming both modules; an unknown name gets "did you
mean" and the list of names. The contract each metric implements is in `_base.py`.

Everything that used to list metric names by hand reads this registry: the harness (what
`--metric` accepts and what it computes), the protocol record (metric_versions), the
report's columns, intervals and verdicts, and the sweeps (which metrics a pair still lacks).
The registry and the metric files import NumPy only.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import pkgutil
from typing import Any, Iterable, Mapping, Optional, Sequence

from spade_bench.errors import EvalError
from spade_bench.metrics._base import (COMMON_PROTOCOL_KEYS, Batch, Context, Metric,  # noqa: F401 - re-exported
                                       Reference, ReplicateInputs, Replicator, Score)

ENTRY_POINT_GROUP = "spade_bench.metrics"
ALL = "all"

METRICS: dict[str, type[Metric]] = {}
_ALIASES: dict[str, str] = {}
_LOADED = False


def register_metric(cls: type[Metric]) -> type[Metric]:
    """Class decorator: register a Metric subclass under its `name` (and `aliases`).
    A name or alias already taken is an error naming both modules."""
    for attribute in ("name", "version", "direction", "label", "latex", "digits", "short", "inputs"):
        if not hasattr(cls, attribute):
            raise EvalError(f"metric class {cls.__module__}.{cls.__qualname__} does not declare {attribute!r}; "
                            f"see spade_bench/metrics/_base.py for what a metric declares")
    if cls.direction not in ("higher", "lower"):
        raise EvalError(f"metric {cls.name!r} ({cls.__module__}): direction must be 'higher' or 'lower', "
                        f"got {cls.direction!r}")
    if cls.inputs not in ("features", "segmentation"):
        raise EvalError(f"metric {cls.name!r} ({cls.__module__}): inputs must be 'features' or 'segmentation', "
                        f"got {cls.inputs!r}")
    for spelling in (cls.name, *cls.aliases):
        if spelling == ALL:
            raise EvalError(f"metric {cls.name!r} ({cls.__module__}): {ALL!r} is reserved for every metric")
        owner = METRICS.get(spelling) or METRICS.get(_ALIASES.get(spelling, ""))
        if owner is not None and owner is not cls:
            raise EvalError(f"metric name {spelling!r} is registered twice ({owner.__module__} and "
                            f"{cls.__module__}); rename one of them")
    METRICS[cls.name] = cls
    for alias in cls.aliases:
        _ALIASES[alias] = cls.name
    return cls


def scan_package(package: str = __name__) -> dict[str, list[str]]:
    """Import every module of `package`; return {module: names of the metrics it registered}.

    A module (not starting with "_") that registers nothing is an EvalError.
    """
    pkg = importlib.import_module(package)
    found: dict[str, list[str]] = {}
    for info in pkgutil.iter_modules(pkg.__path__, prefix=f"{package}."):
        if info.name.rpartition(".")[2].startswith("_"):
            continue
        module = importlib.import_module(info.name)
        found[info.name] = sorted(m.name for m in METRICS.values() if m.__module__ == info.name)
        if not found[info.name]:
            raise EvalError(f"{module.__file__} registers no metric; decorate its Metric subclass with "
                            f"@register_metric, or rename the file to start with _ if it is a helper")
    return found


def load_entry_points(group: str = ENTRY_POINT_GROUP) -> list[str]:
    """Import the module each entry point of `group` names; return the entry point names."""
    names = []
    for entry_point in importlib.metadata.entry_points(group=group):
        try:
            entry_point.load()
        except EvalError:
            raise
        except Exception as e:  # noqa: BLE001 - a broken plug-in becomes one clear message
            dist = entry_point.dist.name if entry_point.dist else "an installed package"
            raise EvalError(f"entry point {entry_point.name!r} = {entry_point.value!r} (group {group}, from "
                            f"{dist}) cannot be imported ({type(e).__name__}: {e}); fix or uninstall {dist}") from None
        names.append(entry_point.name)
    return names


def _ensure_loaded() -> None:
    global _LOADED
    if _LOADED:
        return
    scan_package()
    load_entry_points()
    _LOADED = True


def list_metrics() -> list[type[Metric]]:
    """Every registered metric, in column order."""
    _ensure_loaded()
    return sorted(METRICS.values(), key=lambda m: (m.order, m.name))


def metric_names() -> list[str]:
    return [m.name for m in list_metrics()]


def get_metric(name: str) -> type[Metric]:
    """A metric by name or alias; an unknown name suggests the closest and lists the known ones."""
    _ensure_loaded()
    name = _ALIASES.get(name, name)
    if name not in METRICS:
        raise EvalError(_unknown(name, "metric"))
    return METRICS[name]


def metric_keys() -> list[str]:
    """Every key of metrics.json "metrics": each metric's name, then its extras."""
    return [key for m in list_metrics() for key in (m.name, *m.extras)]


def owner(key: str) -> Optional[str]:
    """The metric whose metrics.json "metrics" key `key` is (its name or one of its extras), or None."""
    return next((m.name for m in list_metrics() if key == m.name or key in m.extras), None)


def choices_text() -> str:
    """The `--metric` choices in words: 'miou, pixel_accuracy (acc), ... or all'."""
    shown = [m.name + (f" ({', '.join(m.aliases)})" if m.aliases else "") for m in list_metrics()]
    return ", ".join(shown) + f" or {ALL}; several: comma-separated"


def _unknown(name: str, what: str) -> str:
    choices = [*metric_names(), *sorted(_ALIASES), ALL]
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown {what} {name!r}; {hint}known metrics: {choices_text()}"


def resolve_request(request: str | Sequence[str], *, inputs: Optional[str] = None) -> list[str]:
    """`--metric` (a name, an alias, "all", or several comma-separated) -> metric names in column
    order, each with the rest of its compute group (asking for mIoU also scores pixel accuracy:
    one confusion matrix). `inputs`: keep only metrics computed from these inputs ("all" then
    means all of those; naming another is an EvalError)."""
    items = [p.strip() for p in request.split(",")] if isinstance(request, str) else [str(p).strip() for p in request]
    items = [p for p in items if p]
    if not items:
        raise EvalError(f"--metric is empty; use one of {choices_text()}")
    wanted: set[str] = set()
    for item in items:
        if item == ALL:
            wanted.update(m.name for m in list_metrics() if inputs is None or m.inputs == inputs)
            continue
        metric = get_metric(item)
        if inputs is not None and metric.inputs != inputs:
            usable = ", ".join(m.name for m in list_metrics() if m.inputs == inputs)
            raise EvalError(f"--metric {item!r} needs a run (it is computed from {metric.inputs}); "
                            f"here use one of {usable} or {ALL}")
        wanted.add(metric.name)
    groups = {get_metric(name).compute_group() for name in wanted}
    return [m.name for m in list_metrics() if m.compute_group() in groups
            and (inputs is None or m.inputs == inputs)]


# ----------------------------------------------------------------------------- versions

def version_token(text: Any) -> Optional[str]:
    """The version in a protocol.metric_versions entry: its first word ("spade-bench-fid/1")."""
    if not isinstance(text, str) or not text.strip():
        return None
    return text.split()[0]


def version_number(token: Optional[str]) -> Optional[int]:
    """n of "<family>/<n>", or None."""
    if not token or "/" not in token:
        return None
    tail = token.rsplit("/", 1)[1]
    return int(tail) if tail.isdigit() else None


def scored_versions(record: Mapping[str, Any]) -> dict[str, Optional[str]]:
    """{metric: its protocol.metric_versions entry (None when not recorded)} for every
    registered metric that a metrics.json record holds a value for."""
    values = record.get("metrics") if isinstance(record.get("metrics"), dict) else {}
    protocol = record.get("protocol") if isinstance(record.get("protocol"), dict) else {}
    versions = protocol.get("metric_versions") if isinstance(protocol.get("metric_versions"), dict) else {}
    return {name: versions.get(name) for name in metric_names() if values.get(name) is not None}


def unscored(record: Mapping[str, Any], names: Optional[Iterable[str]] = None) -> dict[str, str]:
    """{metric: why it needs scoring} for the registered metrics (or `names`) that a metrics.json
    record lacks ("not scored") or holds at another version than this code's ("scored with
    X, now Y")."""
    have = scored_versions(record)
    out = {}
    for name in (list(names) if names is not None else metric_names()):
        metric = get_metric(name)
        if name not in have:
            out[name] = "not scored"
        elif version_token(have[name]) != metric.version:
            out[name] = f"scored with {version_token(have[name]) or 'an unrecorded version'}, now {metric.version}"
    return out
