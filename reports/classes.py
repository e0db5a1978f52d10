"""The report's per-class IoU table: one row per class, named and coloured as the label maps.

Everything comes from eval/metrics.json: `per_class_iou` (class name -> IoU in percent of the
generated images, from the dataset-level confusion counts), `per_class_iou_real` (the same
segmenter on the real photos: each class's ceiling) and `classes` (names, the colours label
maps are drawn in, and the don't-care entry). The don't-care class gets its own row: it has
a colour in every label figure but is scored by no metric.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from reports.collect import RunRecord
from reports.tables import variant_order

CEILING = "real photos (ceiling)"


def _mapping(record: RunRecord, key: str) -> dict:
    value = (record.metrics or {}).get(key)
    return value if isinstance(value, dict) else {}


def class_legend(records: Sequence[RunRecord]) -> Optional[dict]:
    """metrics.json `classes` of the first evaluated run that records it (None: none does)."""
    for record in records:
        legend = _mapping(record, "classes")
        if record.ok and isinstance(legend.get("names"), list) and isinstance(legend.get("colours"), list):
            return legend
    return None


def _cell(values: list[float]) -> str:
    if not values:
        return "–"
    mean = float(np.mean(values))
    text = f"{mean:.1f}"
    if len(values) > 1:
        text += f" ± {float(np.std(values, ddof=1)):.1f}"
    return text


def per_class_table(records: Sequence[RunRecord]) -> Optional[pd.DataFrame]:
    """Rows: the classes in index order (then don't-care); columns: class, colour, one per variant
    (mean ± std over its evaluated seeds; "–" where the class is in no validation image),
    and the real-photo ceiling. None when no run recorded per-class IoU."""
    ok = [r for r in records if r.ok and not r.released and _mapping(r, "per_class_iou")]
    if not ok:
        return None
    legend = class_legend(ok) or {}
    # The legend lists the classes in index order; per_class_iou alone is stored by name.
    indexed = len(legend.get("names") or [])
    names: list[str] = list(legend.get("names") or [])
    for record in ok:
        names += [name for name in _mapping(record, "per_class_iou") if name not in names]
    colours = dict(zip(legend.get("names") or [], legend.get("colours") or []))
    variants = variant_order([r.variant for r in ok])
    rows = []
    for index, name in enumerate(names):
        label = f"{index} {name}" if index < indexed else name
        row = {"class": label, "colour": f"`{colours[name]}`" if name in colours else "–"}
        for variant in variants:
            values = [v for v in (_mapping(r, "per_class_iou").get(name) for r in ok if r.variant == variant)
                      if isinstance(v, (int, float)) and math.isfinite(v)]
            row[variant] = _cell(values)
        real = [v for v in (_mapping(r, "per_class_iou_real").get(name) for r in ok)
                if isinstance(v, (int, float)) and math.isfinite(v)]
        row[CEILING] = f"{float(np.mean(real)):.1f}" if real else "–"
        rows.append(row)
    dont_care = legend.get("dont_care")
    if isinstance(dont_care, dict):
        value = dont_care.get("value")
        raw = f", raw value {value}" if value is not None else ""
        row = {"class": f"{indexed} {dont_care.get('name', 'dont-care')} (don't-care{raw})",
               "colour": f"`{dont_care['colour']}`" if dont_care.get("colour") else "–"}
        row.update({variant: "not scored" for variant in variants})
        row[CEILING] = "not scored"
        rows.append(row)
    return pd.DataFrame(rows, columns=["class", "colour", *variants, CEILING])


def per_class_note(records: Sequence[RunRecord]) -> str:
    """What the per-class table's cells are."""
    seeds = max((sum(1 for r in records if r.ok and r.variant == v) for v in {r.variant for r in records}),
                default=0)
    spread = "mean ± std over seeds" if seeds > 1 else "one seed each, so no spread"
    return ("IoU (%) of each class on the generated images, from the dataset-level confusion counts that "
            f"mIoU averages ({spread}); \"{CEILING}\": the same segmenter on the real validation photos, "
            "the most that class can score here. \"–\": the class is in no evaluated image. Colours are "
            "the label maps' in the sample figure; the don't-care class is drawn but excluded from every "
            "metric.")
