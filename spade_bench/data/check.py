"""`check_dataset`: validate every pair of both splits and summarise the dataset.

It names each bad file with its reason: a label value outside the class range that is not
the don't-care value (with the flag that fixes it), an image without its label or the
reverse, an unreadable or truncated file, an image and label of different sizes, and an
empty dataset or split. Training and evaluation run the same per-pair checks lazily
(`loader.load_pair`), so they stop with the same messages.
"""
from __future__ import annotations

import shlex
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np
from tqdm import tqdm

from spade_bench.config import DataConfig
from spade_bench.data import files, formats
from spade_bench.data.formats.folder import folder_dirs
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
    sizes: Counter = field(default_factory=Counter)
    class_pixels: np.ndarray = None
    class_images: np.ndarray = None
    names: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    raw_values: Counter = field(default_factory=Counter)
    label_sizes: Counter = field(default_factory=Counter)
    instance_files: int = 0
    use_instance: bool = False
    suggested: Optional[str] = None
    alternative: Optional[str] = None

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
        if self.raw_values:
            values = sorted(self.raw_values)
            shown = ", ".join(map(str, values[:24])) + (" ..." if len(values) > 24 else "")
            lines.append(f"raw label values seen: {shown} ({len(values)} distinct)")
        if formats.dataset_format(self.dataset).suggest_flags:
            if self.instance_files:
                used = "used" if self.use_instance else "not used; add --set data.use_instance=true to train with them"
                lines.append(f"instance maps: {self.instance_files} files in instances/ ({used})")
            else:
                lines.append("instance maps: none (optional: instances/NAME.png beside images/ and labels/, "
                             "one id per object, then --set data.use_instance=true)")
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines.extend(f"  {path}: {reason}" for path, reason in self.problems)
        else:
            lines.append("no problems found")
        if self.suggested:
            lines.append(f"train with: {self.suggested}")
        if self.alternative:
            lines.append(self.alternative)
        return "\n".join(lines)


def check_dataset(data_cfg: DataConfig, *, progress: bool = False) -> CheckReport:
    """Validate every pair of both splits; problems are collected, not raised. For a `folder`
    dataset it also infers the flags `train` needs (`report.suggested`)."""

    _check_config(data_cfg)
    fmt = formats.dataset_format(data_cfg.dataset)
    report = CheckReport(data_cfg.dataset, data_cfg.root, data_cfg.label_nc, data_cfg.contain_dontcare,
                         names=class_names(data_cfg))
    if fmt.procedural:
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
    except DataError as e:
        report.problems.append((str(data_cfg.root), _reason(e, data_cfg.root)))
        return report
    report.root = str(root)
    report.use_instance = data_cfg.use_instance
    scan_cfg = data_cfg
    listed: dict[str, list[formats.Pair]] = {}
    for split in SPLITS:
        try:
            listed[split] = formats.list_pairs(data_cfg, split)
        except DataError as e:
            problem = (str(root), _reason(e, root))
            if problem not in report.problems:
                report.problems.append(problem)
            if "data.val_fraction" in str(e) and data_cfg.val_fraction is None:
                # A flat folder: look at its files anyway, to suggest complete flags.
                scan_cfg = replace(data_cfg, val_fraction=FLAT_VAL_FRACTION)
                listed[split] = formats.list_pairs(scan_cfg, split)
    if listed and not any(listed.values()):
        report.problems.append((str(root), f"empty dataset: no image or label files found in either split "
                                           f"(check --root and the {data_cfg.dataset} layout)"))
        return report
    for split, pairs in listed.items():
        report.pairs[split] = sum(1 for p in pairs if p.image is not None and p.label is not None)
        if not pairs:
            report.problems.append((str(root), f"the {split} split is empty: no {split} files found "
                                               f"(check the {data_cfg.dataset} layout)"))
        if fmt.suggest_flags:
            report.instance_files += _count_instances(root, split, scan_cfg)
        for pair in tqdm(pairs, desc=f"check {split}", disable=not progress, unit="pair"):
            if fmt.suggest_flags:  # raw values drive the label_nc / don't-care suggestion
                _scan_raw_values(report, pair)
            try:
                image, label, _ = load_pair(pair, scan_cfg)
            except PairError as e:
                report.problems.append((e.path, e.reason))
                continue
            except DataError as e:
                report.problems.append((pair.display_path, _reason(e, pair.display_path)))
                continue
            _count(report, label, image.size)
    if fmt.suggest_flags:
        _suggest(report, data_cfg, scan_cfg, root)
    return report


FLAT_VAL_FRACTION = 0.1
_VOID_NAMES = ("void", "unlabeled", "unlabelled", "ignore", "dontcare", "don't-care", "dont_care", "unknown")


def _scan_raw_values(report: CheckReport, pair: formats.Pair) -> None:
    if pair.label is None or pair.label.suffix.lower() not in formats.LABEL_SUFFIXES:
        return
    try:
        raw = files.read_map(pair.label)
    except DataError:
        return  # load_pair reports it
    report.label_sizes[(int(raw.shape[1]), int(raw.shape[0]))] += 1
    if raw.ndim == 2:
        values, counts = np.unique(raw, return_counts=True)
        report.raw_values.update(dict(zip(values.tolist(), counts.tolist())))


def _count_instances(root, split: str, data_cfg: DataConfig) -> int:
    try:
        _, _, instances = folder_dirs(root, split, data_cfg.val_fraction)
    except DataError:
        return 0
    if split == "val" and data_cfg.val_fraction is not None and instances == root / "instances":
        return 0  # a flat folder's instances/ was counted with train
    return sum(1 for p in instances.rglob("*") if p.suffix.lower() in formats.LABEL_SUFFIXES) \
        if instances.is_dir() else 0


def _void_value(root) -> Optional[int]:
    """The id that root/label_names.txt names void/unlabelled/ignore, if any."""
    for path in (root / "label_names.txt", root / "train" / "label_names.txt"):
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                parts = line.split()
                if len(parts) >= 2 and parts[0].isdigit() and parts[1].lower() in _VOID_NAMES:
                    return int(parts[0])
    return None


def _suggest(report: CheckReport, data_cfg: DataConfig, scan_cfg: DataConfig, root) -> None:
    """The exact `train` flags for this folder: label_nc and don't-care inferred from the raw
    values seen (a void-like name in label_names.txt, else 255), the split and aspect ratio."""
    values = sorted(int(v) for v in report.raw_values)
    if not values:
        return
    dont_care = _void_value(root)
    if dont_care is None and 255 in values and len(values) > 1 and values[-2] < 254:
        dont_care = 255
    classes = [v for v in values if v != dont_care]
    label_nc = (max(classes) + 1) if classes else 1
    if dont_care is not None and dont_care < label_nc:
        dont_care = None  # a void id inside the class range stays a class
        label_nc = max(values) + 1
    flags = [f"--label-nc {label_nc}"] + ([f"--dont-care {dont_care}"] if dont_care is not None else [])
    sets = []
    if scan_cfg.val_fraction is not None and data_cfg.val_fraction is None:
        sets.append(f"data.val_fraction={scan_cfg.val_fraction:g}")
    sizes = report.sizes or report.label_sizes
    if sizes:
        (width, height), _ = sizes.most_common(1)[0]
        aspect = round(width / height, 3)
        if abs(aspect - data_cfg.aspect_ratio) > 0.01:
            sets.append(f"data.aspect_ratio={aspect:g}")
    if report.instance_files and not data_cfg.use_instance:
        sets.append("data.use_instance=true")
    base = f"spade-bench train --dataset folder --root {shlex.quote(str(root))}"
    tail = "".join(f" --set {s}" for s in sets)
    report.suggested = f"{base} {' '.join(flags)}{tail}"
    if dont_care is None and len(values) > 1 and values == list(range(values[-1] + 1)):
        top = values[-1]
        report.alternative = (f"if value {top} marks unlabelled pixels instead of a class: "
                              f"{base} --label-nc {top} --dont-care {top}{tail}")


def _count(report: CheckReport, label: np.ndarray, size: tuple[int, int]) -> None:
    counts = np.bincount(label.ravel(), minlength=report.label_nc + 1)[:report.label_nc + 1]
    report.class_pixels += counts
    report.class_images += counts > 0
    report.sizes[tuple(int(v) for v in size)] += 1


def _reason(error: DataError, path) -> str:
    message, prefix = str(error), f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message
