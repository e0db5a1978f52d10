"""What a dataset format declares (`DatasetFormat`), and the file-matching helpers its
`list_pairs` uses. Standard library only: config validation reads the format table
without loading torch or numpy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

from spade_bench.errors import DataError

if TYPE_CHECKING:
    from spade_bench.config import DataConfig

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
LABEL_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")
JPEG_SUFFIXES = (".jpg", ".jpeg")

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Pair:
    """One sample's files. A missing image or label is None (reported by the checks).

    Args:
        key: the name that matched the files (relative path without suffix).
        image, label, instance: file paths, or None where absent.
    """

    key: str
    image: Optional[Path]
    label: Optional[Path]
    instance: Optional[Path] = None

    @property
    def display_path(self) -> str:
        return str(self.image or self.label or self.instance or self.key)


PairLister = Callable[[Path, str, "DataConfig"], list[Pair]]


@dataclass(frozen=True)
class DatasetFormat:
    """One dataset format, declared in its own file in this package.

    Args:
        name: its `--dataset` / `data.dataset` name.
        description: one line: what it is and how its files are laid out.
        data_defaults: the DataConfig values the original code used for it (REFERENCE.md
            section 4), applied by `--dataset NAME` before the variant and `--set`.
        generator_defaults: GeneratorConfig values applied likewise (Cityscapes' extra
            upsampling layer).
        list_pairs: `list_pairs(root, split, data_cfg) -> [Pair]` for split "train" or "val",
            sorted by key, incomplete pairs included (the checks report them). None for a
            procedural format: its scenes are generated (data/synthetic.py), it has no root.
        nested_root: a sub-folder of the root that holds the dataset when it exists (ADE20K's
            ADEChallengeData2016/).
        first_class_value: the raw label value of class 0; class k is raw k + first_class_value.
        dont_care: the raw label value of unlabelled pixels (maps to index label_nc, valid only
            with contain_dontcare), or None. `data.dont_care_value` replaces it, unless
            dont_care_fixed.
        dont_care_fixed: the format's don't-care value holds whatever `data.dont_care_value`
            says (ADE20K's 0, which is no class value).
        class_names: the classes' names, used when label_nc equals their number (for a
            procedural format, for any label_nc: class_<i> beyond them); otherwise the names
            in ROOT/label_names.txt, else class_<i>.
        palette: an RGB colour per class index, used when label_nc equals its length (and to
            decode colour label PNGs); otherwise the original's colour map.
        test_photos: path parts, under the root, of the folder of test photos that
            `eval.real_set=test` scores against; None when the format has none.
        suggest_flags: a user's own data, whose classes no file declares: `data check` reads
            the raw label values, counts instances/ files and prints the `train` flags that fit.
        seeded_split: `list_pairs` holds val out of one list of files by `data.split_seed`
            (CMP Facades); config validation refuses data.split_seed for the other formats.
        split_rule: `split_rule(data_cfg) -> str`: how val is told from train, in words, for
            metrics.json `eval_subset.split` and the report; None: the layout's own val files
            (`formats.split_rule` words it).
    """

    name: str
    description: str
    data_defaults: Mapping[str, Any] = field(default_factory=dict)
    generator_defaults: Mapping[str, Any] = field(default_factory=dict)
    list_pairs: Optional[PairLister] = None
    nested_root: Optional[str] = None
    first_class_value: int = 0
    dont_care: Optional[int] = None
    dont_care_fixed: bool = False
    class_names: Optional[tuple[str, ...]] = None
    palette: Optional[tuple[RGB, ...]] = None
    test_photos: Optional[tuple[str, ...]] = None
    suggest_flags: bool = False
    seeded_split: bool = False
    split_rule: Optional[Callable[[Any], str]] = None

    @property
    def procedural(self) -> bool:
        """Generated scenes, no files."""
        return self.list_pairs is None

    @property
    def needs_root(self) -> bool:
        return not self.procedural


# ============================================================================= matching files

def files_by_key(folder: Path, suffixes: tuple[str, ...], recursive: bool, strip: str = "") -> dict[str, list[Path]]:
    """{relative path without suffix (and without `strip`): files} of `folder` with these suffixes."""
    found: dict[str, list[Path]] = {}
    if not folder.is_dir():
        return found
    paths = folder.rglob("*") if recursive else folder.iterdir()
    for path in paths:
        if path.suffix.lower() not in suffixes or path.name.startswith(".") or not path.is_file():
            continue
        relative = path.relative_to(folder).with_suffix("").as_posix()
        if strip and relative.endswith(strip):
            relative = relative[: -len(strip)]
        found.setdefault(relative, []).append(path)
    return found


def match_files(image_dir: Path, label_dir: Path, instance_dir: Optional[Path], suffixes: tuple[str, ...],
                recursive: bool = True, image_suffixes: Optional[tuple[str, ...]] = None) -> list[Pair]:
    """Pair files by relative stem, sorted by key. When images and labels share a folder (CMP
    Facades), labels are its .png files."""
    same_folder = image_dir == label_dir
    images = files_by_key(image_dir, image_suffixes or suffixes, recursive)
    # JPEG labels are listed too, so that they are reported as JPEG labels, not as missing.
    labels = files_by_key(label_dir, LABEL_SUFFIXES + JPEG_SUFFIXES, recursive)
    if same_folder:
        labels = {k: [p for p in v if p.suffix.lower() == ".png"] for k, v in labels.items()}
        labels = {k: v for k, v in labels.items() if v}
    instances = files_by_key(instance_dir, LABEL_SUFFIXES, recursive) if instance_dir is not None else {}
    pairs = []
    for key in sorted(set(images) | set(labels)):
        image = only(images.get(key), "image")
        label = only(labels.get(key), "label")
        instance = only(instances.get(key), "instance")
        pairs.append(Pair(key, image, label, instance))
    return pairs


def only(paths: Optional[list[Path]], what: str) -> Optional[Path]:
    """The one file of a key; two files with the same name are a DataError."""
    if not paths:
        return None
    if len(paths) > 1:
        names = ", ".join(str(p) for p in sorted(paths))
        raise DataError(f"{names}: more than one {what} file with the same name; keep one")
    return paths[0]
