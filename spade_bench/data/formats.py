"""Real dataset layouts: finding image/label/instance files, reading them, and mapping raw label
values to class indices (with the checks that name the file, the value and the fix).

Layouts (REFERENCE.md section 4):
- facades: root/base/cmp_bNNNN.{jpg,png}; sorted by name, the last 78 of 378 (the same share
  of a smaller copy) are the val split. Raw values are the class ids 1..12 (label_nc 13).
- coco-stuff: root/{train,val}_{img,label,inst}/ (the original SPADE layout); 255 is don't-care.
- cityscapes: root/leftImg8bit/{train,val}/<city>/*_leftImg8bit.png with
  root/gtFine/{train,val}/<city>/*_gtFine_labelIds.png and *_gtFine_instanceIds.png.
- ade20k: root[/ADEChallengeData2016]/{images,annotations}/{training,validation}/; raw 0 is
  don't-care (index 150), other values minus 1.
- folder: root/{train,val}/{images,labels[,instances]}/, or root/{images,labels[,instances]}/{train,val}/;
  files matched by relative path and stem. A flat root/{images,labels}/ needs data.val_fraction,
  which holds out a deterministic share of the pairs (by a hash of each name) as val.

A raw don't-care value maps to index label_nc, which is valid only with contain_dontcare.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from spade_bench.config import DataConfig
from spade_bench.data.palette import dataset_palette, decode_colour_label, with_dont_care_colour
from spade_bench.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
LABEL_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")
JPEG_SUFFIXES = (".jpg", ".jpeg")
REAL_FORMATS = ("facades", "coco-stuff", "cityscapes", "ade20k", "folder")
FACADES_VAL_SHARE = 78 / 378

# Cityscapes label ids 0..33 and the license plate (-1 in cityscapesScripts; index 34 here).
CITYSCAPES_CLASS_NAMES = (
    "unlabeled", "ego vehicle", "rectification border", "out of roi", "static", "dynamic", "ground",
    "road", "sidewalk", "parking", "rail track", "building", "wall", "fence", "guard rail", "bridge",
    "tunnel", "pole", "polegroup", "traffic light", "traffic sign", "vegetation", "terrain", "sky",
    "person", "rider", "car", "truck", "bus", "caravan", "trailer", "train", "motorcycle", "bicycle",
    "license plate",
)


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


# ============================================================================= layouts

def dataset_root(data_cfg: DataConfig) -> Path:
    """The dataset folder; a DataError when it is unset or missing."""
    if not data_cfg.root:
        raise DataError(f"dataset {data_cfg.dataset!r} needs a root folder: pass --root PATH")
    root = Path(data_cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found (dataset {data_cfg.dataset!r}); check --root")
    if data_cfg.dataset == "ade20k" and (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    return root


def list_pairs(data_cfg: DataConfig, split: str) -> list[Pair]:
    """All samples of a split, sorted by key, including incomplete ones (image or label None)."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    root = dataset_root(data_cfg)
    kind = data_cfg.dataset
    want_instance = data_cfg.use_instance
    if kind == "facades":
        pairs = _match(root / "base", root / "base", None, IMAGE_SUFFIXES, recursive=False,
                       image_suffixes=(".jpg", ".jpeg"))
        n_val = int(round(len(pairs) * FACADES_VAL_SHARE)) if len(pairs) > 1 else 0
        n_val = max(n_val, 1) if len(pairs) > 1 else 0
        return pairs[:len(pairs) - n_val] if split == "train" else pairs[len(pairs) - n_val:]
    if kind == "coco-stuff":
        return _match(root / f"{split}_img", root / f"{split}_label",
                      root / f"{split}_inst" if want_instance else None, IMAGE_SUFFIXES)
    if kind == "ade20k":
        folder = {"train": "training", "val": "validation"}[split]
        return _match(root / "images" / folder, root / "annotations" / folder, None, IMAGE_SUFFIXES)
    if kind == "cityscapes":
        return _cityscapes_pairs(root, split, want_instance)
    if kind == "folder":
        images, labels, instances = folder_dirs(root, split, data_cfg.val_fraction)
        pairs = _match(images, labels, instances if want_instance else None, IMAGE_SUFFIXES)
        if data_cfg.val_fraction is not None and images == root / "images":
            val_keys = held_out_keys([p.key for p in pairs], data_cfg.val_fraction)
            pairs = [p for p in pairs if (p.key in val_keys) == (split == "val")]
        return pairs
    raise DataError(f"dataset {kind!r} has no files to list; known formats: {', '.join(REAL_FORMATS)}")


def folder_dirs(root: Path, split: str, val_fraction: Optional[float] = None) -> tuple[Path, Path, Path]:
    """(images, labels, instances) folders of a split in the `folder` layout."""
    if (root / split / "images").is_dir() or (root / split / "labels").is_dir():
        base = root / split
        return base / "images", base / "labels", base / "instances"
    if (root / "images" / split).is_dir() or (root / "labels" / split).is_dir():
        return root / "images" / split, root / "labels" / split, root / "instances" / split
    other = "val" if split == "train" else "train"
    if (root / other / "images").is_dir() or (root / other / "labels").is_dir():
        raise DataError(f"{root}: has {other}/ but no {split}/ folder; add {root / split}/images and "
                        f"{root / split}/labels (the folder format needs both train/ and val/)")
    if (root / "images").is_dir() or (root / "labels").is_dir():
        if val_fraction is not None:
            return root / "images", root / "labels", root / "instances"
        raise DataError(
            f"{root}: images/ and labels/ with no train/ and val/ subfolders; move the pairs into "
            f"{root}/train/{{images,labels}} and {root}/val/{{images,labels}}, or hold out a share as val "
            f"with --set data.val_fraction=0.1")
    raise DataError(
        f"{root}: no images/ and labels/ folders (the folder format expects ROOT/train/images, "
        f"ROOT/train/labels, ROOT/val/images and ROOT/val/labels)")


def held_out_keys(keys: list[str], fraction: float) -> set[str]:
    """The val share of a flat folder: keys whose sha1 falls below `fraction` (at least one, and
    at least one left for train when there are two or more)."""
    scored = sorted((int(hashlib.sha1(k.encode()).hexdigest()[:12], 16) / 16 ** 12, k) for k in keys)
    chosen = {k for score, k in scored if score < fraction}
    if not chosen and scored:
        chosen = {scored[0][1]}
    if len(chosen) == len(scored) and len(scored) > 1:
        chosen.discard(scored[-1][1])
    return chosen


def _files_by_key(folder: Path, suffixes: tuple[str, ...], recursive: bool,
                  strip: str = "") -> dict[str, list[Path]]:
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


def _match(image_dir: Path, label_dir: Path, instance_dir: Optional[Path], suffixes: tuple[str, ...],
           recursive: bool = True, image_suffixes: Optional[tuple[str, ...]] = None) -> list[Pair]:
    """Pair files by relative stem. In facades, images are .jpg and labels .png in one folder."""
    same_folder = image_dir == label_dir
    images = _files_by_key(image_dir, image_suffixes or suffixes, recursive)
    # JPEG labels are listed too, so that they are reported as JPEG labels, not as missing.
    labels = _files_by_key(label_dir, LABEL_SUFFIXES + JPEG_SUFFIXES, recursive)
    if same_folder:
        labels = {k: [p for p in v if p.suffix.lower() == ".png"] for k, v in labels.items()}
        labels = {k: v for k, v in labels.items() if v}
    instances = _files_by_key(instance_dir, LABEL_SUFFIXES, recursive) if instance_dir is not None else {}
    pairs = []
    for key in sorted(set(images) | set(labels)):
        image = _only(images.get(key), "image")
        label = _only(labels.get(key), "label")
        instance = _only(instances.get(key), "instance")
        pairs.append(Pair(key, image, label, instance))
    return pairs


def _only(paths: Optional[list[Path]], what: str) -> Optional[Path]:
    if not paths:
        return None
    if len(paths) > 1:
        names = ", ".join(str(p) for p in sorted(paths))
        raise DataError(f"{names}: more than one {what} file with the same name; keep one")
    return paths[0]


def _cityscapes_pairs(root: Path, split: str, want_instance: bool) -> list[Pair]:
    images = _files_by_key(root / "leftImg8bit" / split, (".png",), True, strip="_leftImg8bit")
    gt = root / "gtFine" / split
    labels = _files_by_key(gt, (".png",), True, strip="_gtFine_labelIds")
    labels = {k: v for k, v in labels.items() if v[0].name.endswith("_gtFine_labelIds.png")}
    instances = _files_by_key(gt, (".png",), True, strip="_gtFine_instanceIds") if want_instance else {}
    instances = {k: v for k, v in instances.items() if v[0].name.endswith("_gtFine_instanceIds.png")}
    images = {k: v for k, v in images.items() if v[0].name.endswith("_leftImg8bit.png")}
    return [Pair(key, _only(images.get(key), "image"), _only(labels.get(key), "label"),
                 _only(instances.get(key), "instance"))
            for key in sorted(set(images) | set(labels))]


# ============================================================================= reading

def read_image(path: Path) -> Image.Image:
    """An RGB photo, fully decoded (a truncated or corrupt file is a DataError)."""
    try:
        with Image.open(path) as opened:
            opened.load()
            return opened.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except Exception as e:  # noqa: BLE001 - PIL raises many types for broken files
        raise DataError(f"{path}: cannot read image ({e}); the file is truncated, corrupt or not an image") from None


def exif_orientation(path: Path) -> Optional[int]:
    """The EXIF orientation tag of a photo (1 = upright), or None."""
    try:
        with Image.open(path) as opened:
            return opened.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - no EXIF is not a problem
        return None


def read_map(path: Path, what: str = "label") -> np.ndarray:
    """A label or instance PNG as stored: integer [H, W], or uint8 [H, W, 3] for a colour PNG."""
    try:
        with Image.open(path) as opened:
            opened.load()
            mode = opened.mode
            if mode in ("RGB", "RGBA"):
                array = np.asarray(opened.convert("RGB"))
                if (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all():
                    return np.ascontiguousarray(array[..., 0])   # grey values saved as RGB
                return array
            if mode == "LA":
                return np.asarray(opened.getchannel("L"))
            if mode == "F":
                array = np.asarray(opened)
                if not np.all(array == np.round(array)):
                    raise DataError(f"{path}: {what} map has fractional values; it must hold integer ids")
                return array.astype(np.int64)
            return np.asarray(opened)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: {what} file not found") from None
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{path}: cannot read {what} map ({e}); "
                        f"the file is truncated, corrupt or not an image") from None


# ============================================================================= label values

def raw_dont_care(data_cfg: DataConfig) -> Optional[int]:
    """The raw value in label files that means don't-care, if the dataset has one."""
    if data_cfg.dataset == "ade20k":
        return 0
    if data_cfg.dont_care_value is not None:
        return int(data_cfg.dont_care_value)
    if data_cfg.dataset == "coco-stuff":
        return 255
    return None


def raw_class_range(data_cfg: DataConfig) -> tuple[int, int]:
    """Raw values (first, last) that are classes."""
    if data_cfg.dataset == "ade20k":
        return 1, data_cfg.label_nc
    return 0, data_cfg.label_nc - 1


OUT_OF_RANGE, DONT_CARE_DISABLED = -1, -2


@functools.lru_cache(maxsize=32)
def _lookup(dataset: str, label_nc: int, contain_dontcare: bool, dont_care: Optional[int], size: int) -> np.ndarray:
    # int32 keeps full-resolution label maps small until they are cropped.
    raw = np.arange(size, dtype=np.int32)
    index = raw - 1 if dataset == "ade20k" else raw.copy()
    index[(index < 0) | (index >= label_nc)] = OUT_OF_RANGE
    if dont_care is not None and 0 <= dont_care < size:
        index[dont_care] = label_nc if contain_dontcare else DONT_CARE_DISABLED
    index.flags.writeable = False
    return index


def raw_to_index(raw: np.ndarray, data_cfg: DataConfig) -> np.ndarray:
    """Raw label values -> class indices (int32 or int64); OUT_OF_RANGE (-1) or DONT_CARE_DISABLED (-2)
    where invalid."""
    dont_care = raw_dont_care(data_cfg)
    key = (data_cfg.dataset, data_cfg.label_nc, data_cfg.contain_dontcare, dont_care)
    if raw.dtype in (np.uint8, np.uint16):
        return np.take(_lookup(*key, 256 if raw.dtype == np.uint8 else 65536), raw)
    raw = raw.astype(np.int64)
    lo = int(raw.min()) if raw.size else 0
    if lo >= 0 and int(raw.max()) < 65536:
        return np.take(_lookup(*key, 65536), raw)
    index = raw - 1 if data_cfg.dataset == "ade20k" else raw.copy()
    index[(index < 0) | (index >= data_cfg.label_nc)] = OUT_OF_RANGE
    if dont_care is not None:
        index[raw == dont_care] = data_cfg.label_nc if data_cfg.contain_dontcare else DONT_CARE_DISABLED
    return index


def label_value_problem(raw: np.ndarray, index: np.ndarray, data_cfg: DataConfig) -> Optional[str]:
    """Why a label map is unusable (without the file name), or None when every value is valid."""
    bad = index < 0
    if not bad.any():
        return None
    first, last = raw_class_range(data_cfg)
    dont_care = raw_dont_care(data_cfg)
    out_of_range = np.unique(raw[index == OUT_OF_RANGE])
    if out_of_range.size:
        values = ", ".join(str(int(v)) for v in out_of_range[:8]) + (" ..." if out_of_range.size > 8 else "")
        top = int(out_of_range.max())
        needed = top + (0 if data_cfg.dataset == "ade20k" else 1)
        noun = "value" if out_of_range.size == 1 else "values"
        dc_text = f" and not the don't-care value {dont_care}" if dont_care is not None else \
            " and the dataset has no don't-care value"
        offset = 0 if data_cfg.dataset == "ade20k" else 1
        others = [int(v) for v in out_of_range if v != top and v >= 0]
        nc_with_dc = max([data_cfg.label_nc] + [v + offset for v in others])
        dc_fix = f"--label-nc {nc_with_dc} --dont-care {top}"   # complete: the other values must fit too
        return (f"label {noun} {values} outside the class range {first}..{last} (label_nc={data_cfg.label_nc})"
                f"{dc_text}. If the dataset has more classes pass --label-nc {needed} "
                f"(config data.label_nc); if {top} marks unlabelled pixels pass {dc_fix} "
                f"(config data.dont_care_value={top} with data.contain_dontcare=true). "
                f"`spade-bench data check` lists every value in the dataset")
    return (f"label value {dont_care} is the don't-care value, but data.contain_dontcare is false "
            f"(no channel for it); set data.contain_dontcare=true (--set data.contain_dontcare=true)")


def load_label_array(path: Path, data_cfg: DataConfig, palette: Optional[np.ndarray] = None) -> np.ndarray:
    """A label file -> validated class indices, integer [H, W] (index or colour PNG)."""
    raw = read_map(path, "label")
    if raw.ndim == 3:
        if palette is None:
            palette = dataset_palette(data_cfg)   # with the don't-care colour `colorize_labels` draws
        elif data_cfg.contain_dontcare:
            palette = with_dont_care_colour(np.asarray(palette, dtype=np.uint8)[:data_cfg.label_nc])
        index, unknown = decode_colour_label(raw, palette)
        if unknown:
            shown = ", ".join(str(c) for c in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise DataError(
                f"{path}: colour label map has colours that are not in the {data_cfg.dataset} palette: {shown}; "
                f"save labels as index PNGs (one class id per pixel) instead")
        return index
    if raw.ndim != 2:
        raise DataError(f"{path}: label map has shape {raw.shape}; expected one value per pixel")
    index = raw_to_index(raw, data_cfg)
    problem = label_value_problem(raw, index, data_cfg)
    if problem:
        raise DataError(f"{path}: {problem}")
    return index


def load_instance_array(path: Optional[Path], key: str) -> np.ndarray:
    """An instance map -> int32 [H, W]."""
    if path is None:
        raise DataError(f"{key}: instance map missing; data.use_instance is on, so every image needs one "
                        f"(or set data.use_instance=false)")
    raw = read_map(path, "instance")
    if raw.ndim != 2:
        raise DataError(f"{path}: instance map has shape {raw.shape}; expected one id per pixel")
    return raw.astype(np.int32)


# ============================================================================= class names

def read_label_names(path: Path, data_cfg: DataConfig) -> Optional[list[str]]:
    """Names from a `id name [...]` file (CMP Facades' label_names.txt), indexed like the labels."""
    if not path.is_file():
        return None
    names = [f"class_{i}" for i in range(data_cfg.label_nc)]
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[0].lstrip("-").isdigit():
            continue
        raw = int(parts[0])
        index = raw - 1 if data_cfg.dataset == "ade20k" else raw
        if 0 <= index < data_cfg.label_nc:
            names[index] = parts[1]
    return names
