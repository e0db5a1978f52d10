"""spade_bench.data.files: label names (issue 21: duplicate names in label_names.txt collapsed the
per-class IoU entries, which are keyed by name)."""
from __future__ import annotations

import pytest

from spade_bench.config import resolve
from spade_bench.data import class_names
from spade_bench.errors import DataError


def _cfg(root, label_nc=4):
    return resolve("spade", dataset="folder", root=str(root), overrides=[f"data.label_nc={label_nc}"]).data


def test_label_names_are_read_by_value(tmp_path):
    (tmp_path / "label_names.txt").write_text("0 sky\n1 road\n3 car\n9 ignored\n")
    assert class_names(_cfg(tmp_path)) == ["sky", "road", "class_2", "car"]


def test_two_classes_of_one_name_are_refused_naming_both(tmp_path):
    (tmp_path / "label_names.txt").write_text("0 sky\n1 wall\n2 road\n3 wall\n")
    with pytest.raises(DataError, match=r"label_names\.txt: the name 'wall' is given to label values 1 and 3; "
                                        r"per-class scores are keyed by name"):
        class_names(_cfg(tmp_path))


def test_out_of_range_labels_point_every_file_to_one_answer_for_the_dataset(tmp_path):
    """Issue 21: 300 classes without --label-nc gave one piece of advice per file, each different
    (each file's own highest value), so following one led to the next refusal. Each file's message
    keeps its numbers, and ends with the same command, which answers for every file at once."""
    import numpy as np
    from PIL import Image

    from spade_bench.data import build_dataset, check_dataset

    for split in ("train", "val"):
        for i, top in enumerate((150, 299)):
            for sub in ("images", "labels"):
                (tmp_path / split / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(tmp_path / split / "images" / f"{i}.png")
            label = np.arange(32 * 32).reshape(32, 32) % top
            Image.fromarray(label.astype(np.uint16)).save(tmp_path / split / "labels" / f"{i}.png")
    data = resolve("spade", dataset="folder", root=str(tmp_path),
                   overrides=["data.crop_size=32", "data.load_size=32"]).data
    dataset = build_dataset(data, "train")
    endings = []
    for i in range(2):
        with pytest.raises(DataError) as info:
            dataset[i]
        endings.append(str(info.value).split("These numbers fit this file; ")[1])
    assert endings[0] == endings[1]
    assert f"`spade-bench data check --dataset folder --root {tmp_path}` reads every file" in endings[0]
    report = check_dataset(data, progress=False)
    assert "--label-nc 299" in report.suggested
