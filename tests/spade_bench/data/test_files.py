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
