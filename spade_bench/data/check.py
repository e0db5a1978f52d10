"""`check_dataset`: validate every pair of both splits and summarise the dataset.

It names each bad file with its reason: a label value outside the class range that is not
the don't-care value (with the flag that fixes it), an image without its label or the
reverse, an unreadable or truncated file, an image and label of different sizes, and an
empty dataset or split. Training and evaluation run the same per-pair checks lazily
(`loader.load_pair`), so they stop with the same messages.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from spade_bench.config import DataConfig
from spade_bench.data import formats
from spade_bench.data.loader import PairError, SyntheticDataset, _check_config, class_names, load_pair
from spade_bench.data.synthetic import single_thread
from spade_bench.errors import DataError

SPLITS = ("train", "val")


@dataclass
class CheckReport:
    """What `check_dataset` found.

    Args:
        dataset, root, label_nc, contain_dontcare: what was checked.
        pairs: complete pairs per split (a flat folder serves both splits and is counted once).
        shared_splits: train and val read the same files.
        sizes: Counter of (width, height) over readable pairs.
        class_pixels, class_images: int64 [label_nc + 1] pixel and image counts per class index
            (the last entry is don't-care).
        names: class names.
        problems: (path, reason) for every bad file.
    """

    dataset: str
    root: Optional[str]
    label_nc: int
    contain_dontcare: bool
    pairs: dict[str, int] = field(default_factory=dict)
    shared_splits: bool = False
    sizes: Counter = field(default_factory=Counter)
    class_pixels: np.ndarray = None
    class_images: np.ndarray = None
    names: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self):
        if self.class_pixels is None:
            self.class_pixels = np.zeros(self.label_nc + 1, dtype=np.int64)
        if self.class_images is None:
            self.class_images = np.zeros(self.label_nc + 1, dtype=np.int64)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def num_pairs(self) -> int:
        return sum(self.pairs.values())

    @property
    def classes_present(self) -> list[int]:
        """Class indices (not don't-care) that occur in at least one label map."""
        return [int(i) for i in np.flatnonzero(self.class_pixels[:self.label_nc])]

    def summary(self, max_classes: int = 40) -> str:
        """A readable summary: counts, sizes, class histogram and the problems."""
        where = f" at {self.root}" if self.root else ""
        split_text = ", ".join(f"{s} {n}" for s, n in self.pairs.items())
        if self.shared_splits:
            split_text = "one flat folder, read as both train and val"
        lines = [f"dataset {self.dataset}{where}",
                 f"{self.num_pairs} pairs ({split_text})"]
        if self.sizes:
            widths = [w for w, _ in self.sizes]
            heights = [h for _, h in self.sizes]
            (common_w, common_h), common_n = self.sizes.most_common(1)[0]
            lines.append(f"image sizes (W x H): {min(widths)}..{max(widths)} x {min(heights)}..{max(heights)}, "
                         f"{len(self.sizes)} distinct; most common {common_w}x{common_h} ({common_n} pairs)")
        present = self.classes_present
        dont_care = f", plus don't-care index {self.label_nc}" if self.contain_dontcare else ""
        lines.append(f"{len(present)} classes present (label_nc={self.label_nc}{dont_care})")
        total = int(self.class_pixels.sum())
        if total:
            shown = sorted(present, key=lambda i: -self.class_pixels[i])[:max_classes]
            width = max(len(self.names[i]) for i in shown) if shown else 0
            lines.append("class histogram (share of pixels, images containing it):")
            for i in sorted(shown):
                share = 100.0 * self.class_pixels[i] / total
                lines.append(f"  {i:4d} {self.names[i]:<{width}} {share:6.2f}%  {int(self.class_images[i])}")
            if len(present) > len(shown):
                lines.append(f"  ... and {len(present) - len(shown)} rarer classes")
            dont_care = int(self.class_pixels[self.label_nc])
            if dont_care:
                lines.append(f"  don't-care (index {self.label_nc}): {100.0 * dont_care / total:.2f}% of pixels")
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines.extend(f"  {path}: {reason}" for path, reason in self.problems)
        else:
            lines.append("no problems found")
        return "\n".join(lines)


def check_dataset(data_cfg: DataConfig, *, progress: bool = False) -> CheckReport:
    """Validate every pair of both splits; problems are collected, not raised."""
    from tqdm import tqdm

    _check_config(data_cfg)
    report = CheckReport(data_cfg.dataset, data_cfg.root, data_cfg.label_nc, data_cfg.contain_dontcare,
                         names=class_names(data_cfg))
    if data_cfg.dataset == "synthetic":
        with single_thread():
            for split in SPLITS:
                size = data_cfg.synthetic_train_size if split == "train" else data_cfg.synthetic_val_size
                dataset = SyntheticDataset(data_cfg, split, size, augment=False)
                report.pairs[split] = size
                for index in tqdm(range(size), desc=f"check {split}", disable=not progress, unit="pair"):
                    label = dataset[index]["label"].numpy()
                    _count(report, label, (label.shape[1], label.shape[0]))
        return report

    try:
        root = formats.dataset_root(data_cfg)
        report.shared_splits = formats.shares_splits(data_cfg)
    except DataError as e:
        report.problems.append((str(data_cfg.root), _reason(e, data_cfg.root)))
        return report
    report.root = str(root)
    listed: dict[str, list[formats.Pair]] = {}
    for split in SPLITS[:1] if report.shared_splits else SPLITS:
        try:
            listed[split] = formats.list_pairs(data_cfg, split)
        except DataError as e:
            report.problems.append((str(root), _reason(e, root)))
    if listed and not any(listed.values()):
        report.problems.append((str(root), f"empty dataset: no image or label files found in either split "
                                           f"(check --root and the {data_cfg.dataset} layout)"))
        return report
    for split, pairs in listed.items():
        report.pairs[split] = sum(1 for p in pairs if p.image is not None and p.label is not None)
        if not pairs:
            report.problems.append((str(root), f"the {split} split is empty: no {split} files found "
                                               f"(check the {data_cfg.dataset} layout)"))
        for pair in tqdm(pairs, desc=f"check {split}", disable=not progress, unit="pair"):
            try:
                image, label, _ = load_pair(pair, data_cfg)
            except PairError as e:
                report.problems.append((e.path, e.reason))
                continue
            except DataError as e:
                report.problems.append((pair.display_path, _reason(e, pair.display_path)))
                continue
            _count(report, label, image.size)
    return report


def _count(report: CheckReport, label: np.ndarray, size: tuple[int, int]) -> None:
    counts = np.bincount(label.ravel(), minlength=report.label_nc + 1)[:report.label_nc + 1]
    report.class_pixels += counts
    report.class_images += counts > 0
    report.sizes[tuple(int(v) for v in size)] += 1


def _reason(error: DataError, path) -> str:
    message, prefix = str(error), f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message
