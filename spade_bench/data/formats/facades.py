"""facades: CMP Facades base, ROOT/base/cmp_bNNNN.{jpg,png} (photo and index-PNG label side by side).

Sorted by name, the last 78 of the 378 pairs (the same share of a smaller copy) are the val
split. Raw label values are the class ids 1..12 (label_nc 13; 0 is unused); ROOT/label_names.txt
names them.
"""
from __future__ import annotations

from pathlib import Path

from spade_bench.data.formats._base import IMAGE_SUFFIXES, DatasetFormat, Pair, match_files

VAL_SHARE = 78 / 378


def list_pairs(root: Path, split: str, data_cfg) -> list[Pair]:
    pairs = match_files(root / "base", root / "base", None, IMAGE_SUFFIXES, recursive=False,
                        image_suffixes=(".jpg", ".jpeg"))
    n_val = int(round(len(pairs) * VAL_SHARE)) if len(pairs) > 1 else 0
    n_val = max(n_val, 1) if len(pairs) > 1 else 0
    return pairs[:len(pairs) - n_val] if split == "train" else pairs[len(pairs) - n_val:]


FORMAT = DatasetFormat(
    name="facades",
    description="CMP Facades base: ROOT/base/cmp_bNNNN.jpg + .png; the last 78 of 378 by name are val",
    data_defaults=dict(label_nc=13, contain_dontcare=False, use_instance=False,
                       preprocess="resize_and_crop", load_size=286, crop_size=256, aspect_ratio=1.0),
    list_pairs=list_pairs,
    # The palette of the CMP Facades label PNGs (index 0 is unused; 1..12 are the classes).
    palette=((0, 0, 0), (0, 0, 170), (0, 0, 255), (0, 85, 255), (0, 170, 255), (0, 255, 255), (85, 255, 170),
             (170, 255, 85), (255, 255, 0), (255, 170, 0), (255, 85, 0), (255, 0, 0), (170, 0, 0)),
)
