"""ade20k: ADE20K SceneParsing, ROOT[/ADEChallengeData2016]/{images,annotations}/{training,validation}/.

150 classes. Raw 0 is don't-care (index 150) whatever data.dont_care_value says; class k is
raw k + 1 (the one place that offset is declared).
"""
from __future__ import annotations

from pathlib import Path

from spade_bench.data.formats._base import IMAGE_SUFFIXES, DatasetFormat, Pair, match_files

SPLIT_FOLDERS = {"train": "training", "val": "validation"}


def list_pairs(root: Path, split: str, data_cfg) -> list[Pair]:
    folder = SPLIT_FOLDERS[split]
    return match_files(root / "images" / folder, root / "annotations" / folder, None, IMAGE_SUFFIXES)


FORMAT = DatasetFormat(
    name="ade20k",
    description="ADE20K: ROOT[/ADEChallengeData2016]/{images,annotations}/{training,validation}/",
    data_defaults=dict(label_nc=150, contain_dontcare=True, use_instance=False,
                       preprocess="resize_and_crop", load_size=286, crop_size=256, aspect_ratio=1.0),
    list_pairs=list_pairs,
    nested_root="ADEChallengeData2016",
    first_class_value=1,
    dont_care=0,
    dont_care_fixed=True,
)
