"""The dataset-format table: one file per format in this package, found by a package scan.

Each module (not starting with "_") declares `FORMAT = DatasetFormat(...)` (formats/_base.py):
its name, original defaults, pair listing, raw-to-class mapping, don't-care value, class
names, palette and test-photo layout. `FORMATS` maps each name to it; `data.dataset`'s
allowed values, `--dataset`'s defaults and every reader of files take them from here, so a
new format is one file here plus its test (docs/ARCHITECTURE.md, "Add a dataset format").

Nothing here imports torch or numpy: config validation reads this table. Reading the files
(photos, label maps, raw values -> class indices) is data/files.py.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING

from spade_bench.data.formats._base import (IMAGE_SUFFIXES, JPEG_SUFFIXES, LABEL_SUFFIXES, DatasetFormat, Pair,
                                            files_by_key, match_files, only)
from spade_bench.errors import DataError

if TYPE_CHECKING:
    from spade_bench.config import DataConfig

SPLITS = ("train", "val")


def scan_formats(package: str) -> dict[str, DatasetFormat]:
    """Import every module of `package` (not starting with "_"); each must declare
    `FORMAT = DatasetFormat(...)` with a name of its own. Returns {name: format}, by file name."""
    pkg = importlib.import_module(package)
    found: dict[str, DatasetFormat] = {}
    files: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        fmt = getattr(module, "FORMAT", None)
        if not isinstance(fmt, DatasetFormat):
            raise DataError(f"{module.__file__} declares no dataset format; define FORMAT = DatasetFormat(...), "
                            f"or rename the file to start with _ if it is a helper")
        if fmt.name in found:
            raise DataError(f"dataset format {fmt.name!r} is declared twice ({files[fmt.name]} and "
                            f"{module.__file__}); rename one of them")
        found[fmt.name], files[fmt.name] = fmt, str(module.__file__)
    return found


FORMATS: dict[str, DatasetFormat] = scan_formats(__name__)


def dataset_format(name: str) -> DatasetFormat:
    """The format `name`; an unknown name is a DataError listing the known ones."""
    if name not in FORMATS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(FORMATS)}")
    return FORMATS[name]


def dataset_root(data_cfg: DataConfig) -> Path:
    """The dataset folder; a DataError when it is unset or missing."""
    if not data_cfg.root:
        raise DataError(f"dataset {data_cfg.dataset!r} needs a root folder: pass --root PATH")
    root = Path(data_cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found (dataset {data_cfg.dataset!r}); check --root")
    nested = dataset_format(data_cfg.dataset).nested_root
    if nested and (root / nested).is_dir():
        root = root / nested
    return root


def list_pairs(data_cfg: DataConfig, split: str) -> list[Pair]:
    """All samples of a split, sorted by key, including incomplete ones (image or label None)."""
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    root = dataset_root(data_cfg)
    fmt = dataset_format(data_cfg.dataset)
    if fmt.list_pairs is None:
        with_files = [name for name, f in FORMATS.items() if not f.procedural]
        raise DataError(f"dataset {fmt.name!r} has no files to list; known formats: {', '.join(with_files)}")
    return fmt.list_pairs(root, split, data_cfg)


def split_rule(data_cfg: DataConfig) -> str:
    """How the dataset's val split is told from its train split, in words (metrics.json
    `eval_subset.split`, the report)."""
    fmt = dataset_format(data_cfg.dataset)
    if fmt.split_rule is not None:
        return fmt.split_rule(data_cfg)
    if fmt.procedural:
        return (f"the procedural val scenes 0..{data_cfg.synthetic_val_size - 1} (their own seed stream, "
                f"disjoint from train's)")
    return "the dataset's own val files (its layout's val folder)"


__all__ = ["FORMATS", "DatasetFormat", "IMAGE_SUFFIXES", "JPEG_SUFFIXES", "LABEL_SUFFIXES", "Pair", "SPLITS",
           "dataset_format", "dataset_root", "files_by_key", "list_pairs", "match_files", "only", "scan_formats",
           "split_rule"]
