"""facades: CMP Facades base, ROOT/base/cmp_bNNNN.{jpg,png} (photo and index-PNG label side by side).

78 of the 378 pairs (the same share of a smaller copy) are the val split, held out by a seeded
hash of the file names (data.split_seed, 0 by default for this format): the pairs with the
smallest sha256 of "<seed>:<name>". Not the last ones by name: the files are not exchangeable
in name order (they come in batches by source; KID between b0001-0100 and b0101-0200 is 0.106,
against about 0.00 for random halves), so a name-order split tests on photos unlike the
training ones. A config without data.split_seed (runs saved before it) keeps the old rule, the
last 78 by name. Raw label values are the class ids 1..12 (label_nc 13; 0 is unused);
ROOT/label_names.txt names them.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

from spade_bench.data.formats._base import IMAGE_SUFFIXES, DatasetFormat, Pair, match_files

VAL_SHARE = 78 / 378


def val_count(total: int) -> int:
    """How many of `total` pairs are val: the original's share, at least one when there are two."""
    if total <= 1:
        return 0
    return max(int(round(total * VAL_SHARE)), 1)


def held_out(keys: list[str], seed: Optional[int]) -> set[str]:
    """The val keys: the val_count(len(keys)) with the smallest sha256 of "<seed>:<key>"; with
    seed None, the last ones by name (the rule before data.split_seed)."""
    n_val = val_count(len(keys))
    if seed is None:
        return set(sorted(keys)[len(keys) - n_val:])
    by_hash = sorted(keys, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
    return set(by_hash[:n_val])


def list_pairs(root: Path, split: str, data_cfg) -> list[Pair]:
    pairs = match_files(root / "base", root / "base", None, IMAGE_SUFFIXES, recursive=False,
                        image_suffixes=(".jpg", ".jpeg"))
    val = held_out([p.key for p in pairs], data_cfg.split_seed)
    return [p for p in pairs if (p.key in val) == (split == "val")]


def split_rule(data_cfg) -> str:
    if data_cfg.split_seed is None:
        return "val = the last round(N x 78/378) of the N pairs by file name (data.split_seed unset)"
    return (f"val = the round(N x 78/378) of the N pairs (78 of 378) with the smallest sha256 of "
            f"'{data_cfg.split_seed}:<file name>' (data.split_seed={data_cfg.split_seed}); train = the rest")


FORMAT = DatasetFormat(
    name="facades",
    description="CMP Facades base: ROOT/base/cmp_bNNNN.jpg + .png; 78 of 378 held out as val by a seeded hash",
    data_defaults=dict(label_nc=13, contain_dontcare=False, use_instance=False,
                       preprocess="resize_and_crop", load_size=286, crop_size=256, aspect_ratio=1.0,
                       split_seed=0),
    list_pairs=list_pairs,
    seeded_split=True,
    split_rule=split_rule,
    # The palette of the CMP Facades label PNGs (index 0 is unused; 1..12 are the classes).
    palette=((0, 0, 0), (0, 0, 170), (0, 0, 255), (0, 85, 255), (0, 170, 255), (0, 255, 255), (85, 255, 170),
             (170, 255, 85), (255, 255, 0), (255, 170, 0), (255, 85, 0), (255, 0, 0), (170, 0, 0)),
)
