"""The report's numerics table: what decided the runs' bits (metrics.json "numerics", written by
spade_bench/numerics.py), and which of those fields differ between the runs side by side."""
from __future__ import annotations

from typing import Any, Sequence

from spade_bench.numerics import differing_fields

# The fields the table shows (the record has more; every differing field is named below it).
SHOWN = ("mode", "cpu_vendor", "cpu_model", "cpu_flags", "torch", "torch_cpu_capability", "onednn_version",
         "onednn_isa", "mkl_cbwr", "openblas_core", "torch_threads", "deterministic", "device", "cuda_device",
         "cuda_capability", "cudnn_version", "tf32_matmul", "bf16")


def _value(value: Any) -> str:
    return "–" if value is None else str(value).replace("|", "/")


def numerics_lines(records: Sequence[Any]) -> list[str]:
    """Markdown lines for the evaluated `records` (reports.collect.RunRecord): one table of the
    shown fields (a value per field when the runs agree, else per run), then the fields that
    differ, each with its runs. Nothing when no run recorded its numerics."""
    states = {r.label: r.metrics.get("numerics") for r in records if r.ok and isinstance(r.metrics, dict)}
    recorded = {label: s for label, s in states.items() if isinstance(s, dict)}
    if not recorded:
        return []
    lines = ["### Numerics", "",
             "What decided these runs' bits (metrics.json `numerics`, at evaluation; env.json has the "
             "training's). Runs that differ here can differ by rounding, which acts like a new seed.", "",
             "| field | value |", "|---|---|"]
    differ = differing_fields(list(recorded.values()))
    first = next(iter(recorded.values()))
    for key in SHOWN:
        if all(s.get(key) is None for s in recorded.values()):
            continue
        lines.append(f"| {key} | {'differs (below)' if key in differ else _value(first.get(key))} |")
    lines.append("")
    missing = [label for label, s in states.items() if not isinstance(s, dict)]
    if missing:
        lines += [f"Not recorded (scored before numerics were recorded): {', '.join(missing)}.", ""]
    if differ:
        lines += ["Fields that differ between the runs: " + "; ".join(
            f"`{key}` ({', '.join(f'{label}: {_value(s.get(key))}' for label, s in recorded.items())})"
            for key in differ) + ".", ""]
    elif len(recorded) > 1:
        lines += ["Every recorded numerics field is the same for all runs.", ""]
    return lines
