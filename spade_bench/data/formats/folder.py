"""folder: a user's own paired photos and label maps.

ROOT/{train,val}/{images,labels[,instances]}/, or ROOT/{images,labels[,instances]}/{train,val}/;
files pair up by relative path and stem. A flat ROOT/{images,labels}/ needs data.val_fraction,
which holds out a deterministic share of the pairs (by a hash of each name) as val. Test photos
(eval.real_set=test) go in ROOT/test/images/. No class count, don't-care value or names are
declared: `data check` infers the flags from the raw label values (and reads
ROOT/label_names.txt when present).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

from spade_bench.data.formats._base import IMAGE_SUFFIXES, DatasetFormat, Pair, match_files
from spade_bench.errors import DataError


def folder_dirs(root: Path, split: str, val_fraction: Optional[float] = None) -> tuple[Path, Path, Path]:
    """(images, labels, instances) folders of a split."""
    if (root / split / "images").is_dir() or (root / split / "labels").is_dir():
        base = root / split
        return base / "images", base / "labels", base / "instances"
    if (root / "images" / split).is_dir() or (root / "labels" / split).is_dir():
        return root / "images" / split, root / "labels" / split, root / "instances" / split
    other = "val" if split == "train" else "train"
    if (root / other / "images").is_dir() or (root / other / "labels").is_dir():
        raise DataError(f"{root}: has {other}/ but no {split}/ folder; add {root / split}/images and "
                        f"{root / split}/labels (the folder format needs both train/ and val/)")
    if (root / "images").is_dir() or (root / "labels").is_dir():
        if val_fraction is not None:
            return root / "images", root / "labels", root / "instances"
        raise DataError(
            f"{root}: images/ and labels/ with no train/ and val/ subfolders; move the pairs into "
            f"{root}/train/{{images,labels}} and {root}/val/{{images,labels}}, or hold out a share as val "
            f"with --set data.val_fraction=0.1")
    raise DataError(
        f"{root}: no images/ and labels/ folders (the folder format expects ROOT/train/images, "
        f"ROOT/train/labels, ROOT/val/images and ROOT/val/labels)")


def held_out_keys(keys: list[str], fraction: float) -> set[str]:
    """The val share of a flat folder: keys whose sha1 falls below `fraction` (at least one, and
    at least one left for train when there are two or more)."""
    scored = sorted((int(hashlib.sha1(k.encode()).hexdigest()[:12], 16) / 16 ** 12, k) for k in keys)
    chosen = {k for score, k in scored if score < fraction}
    if not chosen and scored:
        chosen = {scored[0][1]}
    if len(chosen) == len(scored) and len(scored) > 1:
        chosen.discard(scored[-1][1])
    return chosen


def list_pairs(root: Path, split: str, data_cfg) -> list[Pair]:
    images, labels, instances = folder_dirs(root, split, data_cfg.val_fraction)
    pairs = match_files(images, labels, instances if data_cfg.use_instance else None, IMAGE_SUFFIXES)
    if data_cfg.val_fraction is not None and images == root / "images":
        val_keys = held_out_keys([p.key for p in pairs], data_cfg.val_fraction)
        pairs = [p for p in pairs if (p.key in val_keys) == (split == "val")]
    return pairs


def split_rule(data_cfg) -> str:
    if data_cfg.val_fraction is None:
        return "the val/ folder of the root (ROOT/val/... or ROOT/.../val)"
    return (f"a flat root: val = the names whose sha1 falls below data.val_fraction={data_cfg.val_fraction:g} "
            f"(when the root has no train/ and val/ folders)")


FORMAT = DatasetFormat(
    name="folder",
    description="your own pairs: ROOT/{train,val}/{images,labels[,instances]}/ (see `data check`)",
    list_pairs=list_pairs,
    test_photos=("test", "images"),
    suggest_flags=True,
    split_rule=split_rule,
)
