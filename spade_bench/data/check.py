"""`check_dataset`: validate every pair of both splits and give the dataset-wide answer.

It names each bad file with its reason: a label value outside the class range that is not
the don't-care value, an image without its label or the reverse, an unreadable or truncated
file, an image and label of different sizes, and an empty dataset or split. Training and
evaluation run the same per-pair checks lazily (`loader.load_pair`), so they stop with the
same messages.

`CheckReport.summary()` answers for the whole dataset first: the verdict (ready, or what
stops it and whether the command fixes it), then the complete `spade-bench train` command
(every data flag the user passed or the data needs, each with where its value came from:
"--dont-care 11: label_names.txt calls 11 'void'"), then the class histogram with names and
the image sizes, and last the per-file problems as a count by kind with a few examples
(`summary(verbose=True)`: every file). For a user's own data (`folder`) the label flags are
inferred from the raw values of every label map, never from one file alone.
"""
from __future__ import annotations

import shlex
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image
from tqdm import tqdm

from spade_bench.config import DataConfig, RunConfig, with_dataset
from spade_bench.data import files, formats
from spade_bench.data.formats.folder import folder_dirs
from spade_bench.data.loader import PairError, SyntheticDataset, _check_config, class_names, load_pair
from spade_bench.data.synthetic import single_thread
from spade_bench.errors import DataError

SPLITS = ("train", "val")
# Files shown per kind of problem without --verbose.
EXAMPLES_PER_KIND = 3

# The kind of a per-file problem, from its reason: (kind, one of them, text the reason contains);
# first match wins.
PROBLEM_KINDS = (
    ("label maps with values outside the class range", "label map with values outside the class range",
     "outside the class range"),
    ("label maps with the don't-care value but no data.contain_dontcare",
     "label map with the don't-care value but no data.contain_dontcare", "is the don't-care value, but"),
    ("label maps saved as JPEG", "label map saved as JPEG", "saved as JPEG"),
    ("colour label maps with colours outside the palette", "colour label map with colours outside the palette",
     "colour label map has colours"),
    ("images without their label map", "image without its label map", "image without its label map"),
    ("label maps without their image", "label map without its image", "label map without its image"),
    ("unreadable images", "unreadable image", "cannot read image"),
    ("unreadable label maps", "unreadable label map", "cannot read label"),
    ("instance map problems", "instance map problem", "instance map"),
    ("pairs whose image and label map sizes differ", "pair whose image and label map sizes differ",
     "they must match"),
)
LAYOUT = "dataset layout problems"
OTHER = "other problems"
_ONE = {kind: one for kind, one, _ in PROBLEM_KINDS} | {LAYOUT: "dataset layout problem", OTHER: "other problem"}
# Kinds that the label flags (--label-nc / --dont-care) decide.
LABEL_KINDS = (PROBLEM_KINDS[0][0], PROBLEM_KINDS[1][0])


def problem_kind(reason: str, path: str = "", root: Optional[str] = None) -> str:
    """The kind of a problem (`PROBLEM_KINDS`; a problem of the root folder itself is the layout's)."""
    if root is not None and path == str(root):
        return LAYOUT
    return next((kind for kind, _, text in PROBLEM_KINDS if text in reason), OTHER)


@dataclass(frozen=True)
class Flag:
    """One flag of the suggested command, and where its value came from.

    Args:
        text: the flag as typed, e.g. "--dont-care 11" or "--set data.aspect_ratio=1.333".
        why: where the value came from ("label_names.txt calls 11 'void'", "you passed it").
    """

    text: str
    why: str


@dataclass
class Histogram:
    """Pixels and label maps per class index under one reading of the labels.

    Args:
        label_nc: classes (the last entry of `pixels` / `images` is don't-care).
        names: a name per class.
        pixels, images: int64 [label_nc + 1].
        dont_care: how the don't-care entry reads ("raw value 11, 'void'"); None without one.
        basis: why this reading, when it is not the checked config's (the command's flags).
    """

    label_nc: int
    names: list[str]
    pixels: np.ndarray
    images: np.ndarray
    dont_care: Optional[str] = None
    basis: str = ""

    @property
    def present(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.pixels[:self.label_nc])]


@dataclass
class CheckReport:
    """What `check_dataset` found.

    Args:
        dataset, root, label_nc, contain_dontcare: what was checked.
        pairs: complete pairs per split (a flat folder serves both splits and is counted once).
        sizes: Counter of photo (width, height), over every pair with a photo that opens.
        class_pixels, class_images: int64 [label_nc + 1] pixel and image counts per class index
            under the checked config (the last entry is don't-care).
        names: class names.
        problems: (path, reason) for every bad file.
        raw_values, raw_images: raw label value -> pixels, label maps holding it (`folder` only).
        suggested: the complete `spade-bench train` command (every data flag passed or needed);
            `flags` says where each value came from; `alternative` a second reading, if any.
        inferred: the class histogram under the command's label flags, read from the raw values
            (`folder`; None: `histogram` is the checked config's).
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
    raw_images: Counter = field(default_factory=Counter)
    label_sizes: Counter = field(default_factory=Counter)
    instance_files: int = 0
    use_instance: bool = False
    suggested: Optional[str] = None
    flags: list[Flag] = field(default_factory=list)
    alternative: Optional[str] = None
    inferred: Optional[Histogram] = None
    dont_care_value: Optional[int] = None
    # Problems the suggested command fixes: their kinds, and the flat-folder layout problem.
    fixes: set[str] = field(default_factory=set)

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
        """Class indices (not don't-care) that occur in at least one label map (checked config)."""
        return [int(i) for i in np.flatnonzero(self.class_pixels[:self.label_nc])]

    @property
    def histogram(self) -> Histogram:
        """The histogram the summary prints: under the command's label flags when they were
        inferred, else under the checked config."""
        if self.inferred is not None:
            return self.inferred
        dont_care = None
        if self.contain_dontcare:
            dont_care = f"raw value {self.dont_care_value}" if self.dont_care_value is not None else ""
        return Histogram(self.label_nc, self.names, self.class_pixels, self.class_images, dont_care)

    def kind(self, problem: tuple[str, str]) -> str:
        return problem_kind(problem[1], problem[0], self.root)

    def is_fixed(self, problem: tuple[str, str]) -> bool:
        """Whether the suggested command fixes this problem."""
        kind = self.kind(problem)
        if kind == LAYOUT:
            return LAYOUT in self.fixes and "data.val_fraction" in problem[1]
        return kind in self.fixes

    def by_kind(self) -> dict[str, list[tuple[str, str]]]:
        """Problems grouped by kind, most frequent kind first."""
        groups: dict[str, list[tuple[str, str]]] = {}
        for problem in self.problems:
            groups.setdefault(self.kind(problem), []).append(problem)
        return dict(sorted(groups.items(), key=lambda item: -len(item[1])))

    # ------------------------------------------------------------------------- summary

    def verdict(self) -> str:
        """One line for the whole dataset."""
        if self.ok:
            added = [f.text for f in self.flags if not f.why.startswith("you passed it")]
            return (f"ready: all {self.num_pairs} pairs of both splits read and check clean"
                    + (" with these flags" if self.suggested else "")
                    + (f"; the command below adds {' '.join(added)} (why: under each flag)" if added else ""))
        fixed = [p for p in self.problems if self.is_fixed(p)]
        rest = [p for p in self.problems if not self.is_fixed(p)]
        if not rest and self.suggested:
            return (f"not ready with these flags: {_kinds_text(self, fixed)}; the command below fixes "
                    f"every one of them")
        text = f"not ready: {len(rest)} problem(s) that the command below does not fix " \
               f"({_kinds_text(self, rest)}); each is listed below with what to do"
        if fixed:
            text += f"; the command below fixes the other {len(fixed)} ({_kinds_text(self, fixed)})"
        return text

    def summary(self, max_classes: int = 40, *, verbose: bool = False) -> str:
        """The verdict and the command first, then the class histogram, the sizes, and the
        problems as a count by kind with a few examples (every file with `verbose`)."""
        where = f" at {self.root}" if self.root else ""
        split_text = ", ".join(f"{s} {n}" for s, n in self.pairs.items())
        lines = [f"dataset {self.dataset}{where}: {self.num_pairs} pairs ({split_text})",
                 f"verdict: {self.verdict()}"]
        if self.suggested:
            lines.append(f"train with: {self.suggested}")
            lines.extend(f"  {flag.text}: {flag.why}" for flag in self.flags)
            lines.append("  (add --preset, --variant and --out; `data check` takes the same flags)")
        if self.alternative:
            lines.append(self.alternative)
        lines += self._histogram_lines(max_classes)
        lines += self._size_lines()
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
        lines += self._problem_lines(verbose)
        return "\n".join(lines)

    def _histogram_lines(self, max_classes: int) -> list[str]:
        h = self.histogram
        present = h.present
        dont_care = f", plus don't-care index {h.label_nc}" if h.dont_care is not None else ""
        lines = [f"{len(present)} classes present (label_nc={h.label_nc}{dont_care}){h.basis}"]
        total = int(h.pixels.sum())
        if not total:
            return lines
        shown = sorted(present, key=lambda i: -h.pixels[i])[:max_classes]
        width = max((len(h.names[i]) for i in shown), default=0)
        lines.append("class histogram (index, name, share of pixels, label maps containing it):")
        for i in sorted(shown):
            share = 100.0 * h.pixels[i] / total
            lines.append(f"  {i:4d} {h.names[i]:<{width}} {share:6.2f}%  {int(h.images[i])}")
        if len(present) > len(shown):
            lines.append(f"  ... and {len(present) - len(shown)} rarer classes")
        absent = [i for i in range(h.label_nc) if i not in present]
        if absent:
            listed = ", ".join(f"{i} {h.names[i]}" for i in absent[:8]) + (" ..." if len(absent) > 8 else "")
            lines.append(f"  no pixels: {listed}")
        dont_care_pixels = int(h.pixels[h.label_nc]) if len(h.pixels) > h.label_nc else 0
        if dont_care_pixels:
            what = f" ({h.dont_care})" if h.dont_care else ""
            lines.append(f"  don't-care (index {h.label_nc}): {100.0 * dont_care_pixels / total:.2f}% of pixels"
                         f"{what}, in {int(h.images[h.label_nc])} label maps")
        return lines

    def _size_lines(self) -> list[str]:
        sizes = self.sizes or self.label_sizes
        if not sizes:
            return []
        what = "image sizes" if self.sizes else "label map sizes"
        total = sum(sizes.values())
        common = sizes.most_common(4)
        listed = ", ".join(f"{w}x{h} ({n} {'pair' if n == 1 else 'pairs'})" for (w, h), n in common)
        if len(sizes) == 1:
            return [f"{what} (W x H): {listed}, all of them"]
        widths = [w for w, _ in sizes]
        heights = [h for _, h in sizes]
        more = f", ... {len(sizes) - len(common)} more" if len(sizes) > len(common) else ""
        return [f"{what} (W x H): {len(sizes)} distinct over {total} pairs, {min(widths)}..{max(widths)} x "
                f"{min(heights)}..{max(heights)}; most common {listed}{more}"]

    def _problem_lines(self, verbose: bool) -> list[str]:
        if not self.problems:
            return ["no problems found"]
        groups = self.by_kind()
        hint = "" if verbose or all(len(g) <= EXAMPLES_PER_KIND for g in groups.values()) else \
            " (--verbose lists every file)"
        lines = [f"{len(self.problems)} problem(s) in {len(groups)} {'kind' if len(groups) == 1 else 'kinds'}{hint}:"]
        for kind, problems in groups.items():
            fixed = all(self.is_fixed(p) for p in problems)
            note = "; the command above fixes them" if fixed and self.suggested else ""
            count = str(len(problems))
            shown = problems if verbose else problems[:EXAMPLES_PER_KIND]
            more = "" if len(shown) == len(problems) else f" (first {len(shown)} shown)"
            lines.append(f"  {kind}: {count}{note}{more}")
            for path, reason in shown:
                lines.append(f"    {path}: {_short_reason(reason) if fixed and self.suggested else reason}")
        return lines


def _kinds_text(report: CheckReport, problems: list[tuple[str, str]]) -> str:
    counts = Counter(report.kind(p) for p in problems)
    return ", ".join(f"{n} {kind if n > 1 else _ONE[kind]}" for kind, n in counts.most_common())


def _short_reason(reason: str) -> str:
    """A label-value reason without its per-file advice: the dataset-wide command replaces it."""
    return reason.split(". If the dataset has more classes")[0]


# ============================================================================= the check

def check_dataset(data_cfg: DataConfig, *, progress: bool = False) -> CheckReport:
    """Validate every pair of both splits; problems are collected, not raised. Also builds the
    complete `train` command (`report.suggested`); for a `folder` dataset it infers the label
    flags, the split and the aspect ratio from the files."""

    _check_config(data_cfg)
    fmt = formats.dataset_format(data_cfg.dataset)
    report = CheckReport(data_cfg.dataset, data_cfg.root, data_cfg.label_nc, data_cfg.contain_dontcare,
                         names=class_names(data_cfg), dont_care_value=files.raw_dont_care(data_cfg))
    if fmt.procedural:
        with single_thread():
            for split in SPLITS:
                size = data_cfg.synthetic_train_size if split == "train" else data_cfg.synthetic_val_size
                dataset = SyntheticDataset(data_cfg, split, size, augment=False)
                report.pairs[split] = size
                for index in tqdm(range(size), desc=f"check {split}", disable=not progress, unit="pair"):
                    label = dataset[index]["label"].numpy()
                    _count(report, label)
                    report.sizes[(label.shape[1], label.shape[0])] += 1
        _command(report, data_cfg, data_cfg, None)
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
            _count_size(report, pair)
            try:
                _, label, _ = load_pair(pair, scan_cfg)
            except PairError as e:
                report.problems.append((e.path, e.reason))
                continue
            except DataError as e:
                report.problems.append((pair.display_path, _reason(e, pair.display_path)))
                continue
            _count(report, label)
    _command(report, data_cfg, scan_cfg, root)
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
        report.raw_images.update(values.tolist())


def _count_size(report: CheckReport, pair: formats.Pair) -> None:
    """The photo's size from its header (also for pairs whose label fails the check)."""
    if pair.image is None:
        return
    try:
        with Image.open(pair.image) as opened:
            report.sizes[tuple(int(v) for v in opened.size)] += 1
    except Exception:  # noqa: BLE001 - load_pair reports an unreadable photo
        return


def _count_instances(root, split: str, data_cfg: DataConfig) -> int:
    try:
        _, _, instances = folder_dirs(root, split, data_cfg.val_fraction)
    except DataError:
        return 0
    if split == "val" and data_cfg.val_fraction is not None and instances == root / "instances":
        return 0  # a flat folder's instances/ was counted with train
    return sum(1 for p in instances.rglob("*") if p.suffix.lower() in formats.LABEL_SUFFIXES) \
        if instances.is_dir() else 0


def _void_value(root) -> Optional[tuple[int, str, Path]]:
    """(id, name, file) of the class that root/label_names.txt names void/unlabelled/ignore, if any."""
    for path in (root / "label_names.txt", root / "train" / "label_names.txt"):
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                parts = line.split()
                if len(parts) >= 2 and parts[0].isdigit() and parts[1].lower() in _VOID_NAMES:
                    return int(parts[0]), parts[1], path
    return None


def _set_value(value: Any) -> str:
    """A config value as `--set` parses it back."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(round(value, 6))
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def _passed(data_cfg: DataConfig) -> dict[str, Any]:
    """The data settings that differ from the format's defaults: what the user passed."""
    defaults = with_dataset(RunConfig(), data_cfg.dataset, data_cfg.root).data
    return {f.name: getattr(data_cfg, f.name) for f in fields(DataConfig)
            if f.name not in ("dataset", "root") and getattr(data_cfg, f.name) != getattr(defaults, f.name)}


def _infer_labels(report: CheckReport, data_cfg: DataConfig, root: Path,
                  passed: dict[str, Any]) -> Optional[tuple[int, Optional[int], list[Flag]]]:
    """(label_nc, don't-care value or None, flags) read from the raw values of every label map;
    None when the flags given already fit every value (they are kept) or no values were read."""
    values = sorted(int(v) for v in report.raw_values)
    label_trouble = any(report.kind(p) in LABEL_KINDS for p in report.problems)
    user_labels = bool({"label_nc", "dont_care_value", "contain_dontcare"} & set(passed))
    if not values or (user_labels and not label_trouble):
        return None
    void = _void_value(root)
    dont_care, dc_why = None, ""
    if void is not None:
        dont_care = void[0]
        dc_why = f"{void[2].relative_to(root)} calls {void[0]} {void[1]!r}"
    elif 255 in values and len(values) > 1 and values[-2] < 254:
        dont_care = 255
        dc_why = (f"255 lies apart from the other values (up to {values[-2]}): the usual 'unlabelled' value "
                  f"(no label_names.txt names a void class)")
    classes = [v for v in values if v != dont_care]
    label_nc = (max(classes) + 1) if classes else 1
    if dont_care is not None and dont_care < label_nc:
        dont_care = None  # a void id inside the class range stays a class
        label_nc = max(values) + 1
        classes = values
    missing = sorted(set(range(label_nc)) - set(classes))
    gaps = f"; {', '.join(map(str, missing[:8]))}{' ...' if len(missing) > 8 else ''} never occur" if missing else ""
    besides = " besides the don't-care value" if dont_care is not None else ""
    nc_why = f"the label maps hold class values 0..{label_nc - 1}{besides}{gaps}"
    if passed.get("label_nc") not in (None, label_nc):
        nc_why += f" (you passed {passed['label_nc']}, which leaves values out)"
    flags = [Flag(f"--label-nc {label_nc}", nc_why)]
    if dont_care is not None:
        given = passed.get("dont_care_value")
        flags.append(Flag(f"--dont-care {dont_care}", dc_why + (f" (you passed {given})" if given not in
                                                                (None, dont_care) else "")))
    return label_nc, dont_care, flags


def _command(report: CheckReport, data_cfg: DataConfig, scan_cfg: DataConfig, root: Optional[Path]) -> None:
    """The complete `train` command: the data flags the user passed, and for a `folder` dataset
    the label flags, split and aspect ratio its files need, each with where its value came from."""
    fmt = formats.dataset_format(data_cfg.dataset)
    passed = _passed(data_cfg)
    flags: list[Flag] = []
    settings: dict[str, str] = {}     # data key -> why, for the --set flags
    label_nc, dont_care = data_cfg.label_nc, files.raw_dont_care(data_cfg) if data_cfg.contain_dontcare else None
    inferred = _infer_labels(report, data_cfg, root, passed) if fmt.suggest_flags and root is not None else None
    if inferred is not None:
        label_nc, dont_care, label_flags = inferred
        flags += label_flags
        report.fixes.update(LABEL_KINDS)
    else:
        if "label_nc" in passed:
            flags.append(Flag(f"--label-nc {data_cfg.label_nc}", "you passed it" + (
                "; every label value fits" if report.raw_values else "")))
        if "dont_care_value" in passed and data_cfg.contain_dontcare:
            void = _void_value(root) if root is not None else None
            also = f"; {void[2].relative_to(root)} also calls {void[0]} {void[1]!r}" \
                if void is not None and void[0] == data_cfg.dont_care_value else ""
            flags.append(Flag(f"--dont-care {data_cfg.dont_care_value}", "you passed it" + also))
        elif "contain_dontcare" in passed:
            settings["contain_dontcare"] = "you passed it"
    values = {"label_nc": label_nc, "dont_care_value": dont_care, "contain_dontcare": dont_care is not None}
    if fmt.suggest_flags and root is not None:
        if scan_cfg.val_fraction is not None and data_cfg.val_fraction is None:
            values["val_fraction"] = scan_cfg.val_fraction
            settings["val_fraction"] = (f"{root} has images/ and labels/ but no train/ and val/: hold out "
                                        f"{scan_cfg.val_fraction:.0%} as val by a hash of each file name")
            report.fixes.add(LAYOUT)
        sizes = report.sizes or report.label_sizes
        if sizes:
            (width, height), count = sizes.most_common(1)[0]
            aspect = round(width / height, 3)
            what = f"the photos are {width}x{height} (W x H)" if report.sizes else \
                f"the label maps are {width}x{height} (W x H)"
            share = f"{count} of {sum(sizes.values())}"
            if abs(aspect - data_cfg.aspect_ratio) > 0.01:
                values["aspect_ratio"] = aspect
                given = f" (you passed {data_cfg.aspect_ratio:g})" if "aspect_ratio" in passed else ""
                settings["aspect_ratio"] = f"{what}, {share} pairs; training keeps their shape{given}"
            elif "aspect_ratio" in passed:
                settings["aspect_ratio"] = f"you passed it; {what}, {share} pairs"
        if report.instance_files and not data_cfg.use_instance:
            values["use_instance"] = True
            settings["use_instance"] = f"{report.instance_files} instance maps in instances/"
    for key in passed:
        if key not in ("label_nc", "dont_care_value", "contain_dontcare") and key not in settings:
            settings[key] = "you passed it"
    for f in fields(DataConfig):          # in the config's field order
        if f.name in settings:
            value = values.get(f.name, getattr(data_cfg, f.name))
            flags.append(Flag(f"--set data.{f.name}={_set_value(value)}", settings[f.name]))
    base = f"spade-bench train --dataset {data_cfg.dataset}"
    if data_cfg.root:
        base += f" --root {shlex.quote(str(Path(data_cfg.root).expanduser()))}"
    report.flags = flags
    report.suggested = " ".join([base] + [f.text for f in flags])
    if report.raw_values and root is not None:
        report.inferred = _histogram_from_raw(report, data_cfg, label_nc, dont_care, root)
    if inferred is not None:
        values_seen = sorted(report.raw_values)
        if dont_care is None and len(values_seen) > 1 and values_seen == list(range(values_seen[-1] + 1)):
            top = values_seen[-1]
            rest = " ".join(f.text for f in flags if not f.text.startswith(("--label-nc", "--dont-care")))
            report.alternative = (f"if value {top} marks unlabelled pixels instead of a class: "
                                  f"{base} --label-nc {top} --dont-care {top}" + (f" {rest}" if rest else ""))


def _histogram_from_raw(report: CheckReport, data_cfg: DataConfig, label_nc: int, dont_care: Optional[int],
                        root: Path) -> Histogram:
    """The class histogram under the command's label flags, from every label map's raw values."""
    pixels = np.zeros(label_nc + 1, dtype=np.int64)
    images = np.zeros(label_nc + 1, dtype=np.int64)
    for value, count in report.raw_values.items():
        index = label_nc if value == dont_care else int(value)
        if 0 <= index <= label_nc:
            pixels[index] += count
            images[index] += report.raw_images[value]
    named = replace(data_cfg, label_nc=label_nc, contain_dontcare=dont_care is not None, dont_care_value=dont_care)
    names = class_names(named)
    dont_care_text = None
    if dont_care is not None:
        void = _void_value(root)
        dont_care_text = f"raw value {dont_care}" + (f", {void[1]!r}" if void is not None and void[0] == dont_care
                                                     else "")
    basis = ""
    checked_dc = files.raw_dont_care(data_cfg) if data_cfg.contain_dontcare else None
    if (label_nc, dont_care) != (data_cfg.label_nc, checked_dc):
        flags = f"--label-nc {label_nc}" + (f" --dont-care {dont_care}" if dont_care is not None else "")
        basis = f", read with the command's {flags}"
    return Histogram(label_nc, names, pixels, images, dont_care_text, basis)


def _count(report: CheckReport, label: np.ndarray) -> None:
    counts = np.bincount(label.ravel(), minlength=report.label_nc + 1)[:report.label_nc + 1]
    report.class_pixels += counts
    report.class_images += counts > 0


def _reason(error: DataError, path) -> str:
    message, prefix = str(error), f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message
