"""coco-stuff: the original SPADE layout, ROOT/{train,val}_{img,label,inst}/ (test photos in
ROOT/test_img/). 182 classes; raw 255 is don't-care (data.dont_care_value may name another)."""
from __future__ import annotations

from pathlib import Path

from spade_bench.data.formats._base import IMAGE_SUFFIXES, DatasetFormat, Pair, match_files


def list_pairs(root: Path, split: str, data_cfg) -> list[Pair]:
    return match_files(root / f"{split}_img", root / f"{split}_label",
                       root / f"{split}_inst" if data_cfg.use_instance else None, IMAGE_SUFFIXES)


FORMAT = DatasetFormat(
    name="coco-stuff",
    description="COCO-Stuff in the original SPADE layout: ROOT/{train,val}_{img,label,inst}/",
    data_defaults=dict(label_nc=182, contain_dontcare=True, use_instance=True,
                       preprocess="resize_and_crop", load_size=286, crop_size=256, aspect_ratio=1.0),
    list_pairs=list_pairs,
    dont_care=255,
    test_photos=("test_img",),
)
