"""Reading a dataset's files: photos, label and instance maps, and mapping raw label values to
class indices (with the checks that name the file, the value and the fix).

What a format's files mean (where they are, which raw value is class 0, which is don't-care)
comes from its file in data/formats/; this module applies it. A raw don't-care value maps to
index label_nc, which is valid only with contain_dontcare.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from spade_bench.config import DataConfig
from spade_bench.data.formats import dataset_format
from spade_bench.data.palette import dataset_palette, decode_colour_label, with_dont_care_colour
from spade_bench.errors import DataError


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
    """The raw value in label files that means don't-care, if the dataset has one: the format's
    own when it is fixed, else data.dont_care_value, else the format's."""
    fmt = dataset_format(data_cfg.dataset)
    if fmt.dont_care_fixed:
        return fmt.dont_care
    if data_cfg.dont_care_value is not None:
        return int(data_cfg.dont_care_value)
    return fmt.dont_care


def raw_class_range(data_cfg: DataConfig) -> tuple[int, int]:
    """Raw values (first, last) that are classes."""
    first = dataset_format(data_cfg.dataset).first_class_value
    return first, first + data_cfg.label_nc - 1


OUT_OF_RANGE, DONT_CARE_DISABLED = -1, -2


@functools.lru_cache(maxsize=32)
def _lookup(first: int, label_nc: int, contain_dontcare: bool, dont_care: Optional[int], size: int) -> np.ndarray:
    # int32 keeps full-resolution label maps small until they are cropped.
    raw = np.arange(size, dtype=np.int32)
    index = raw - first
    index[(index < 0) | (index >= label_nc)] = OUT_OF_RANGE
    if dont_care is not None and 0 <= dont_care < size:
        index[dont_care] = label_nc if contain_dontcare else DONT_CARE_DISABLED
    index.flags.writeable = False
    return index


def raw_to_index(raw: np.ndarray, data_cfg: DataConfig) -> np.ndarray:
    """Raw label values -> class indices (int32 or int64); OUT_OF_RANGE (-1) or DONT_CARE_DISABLED (-2)
    where invalid."""
    dont_care = raw_dont_care(data_cfg)
    first = dataset_format(data_cfg.dataset).first_class_value
    key = (first, data_cfg.label_nc, data_cfg.contain_dontcare, dont_care)
    if raw.dtype in (np.uint8, np.uint16):
        return np.take(_lookup(*key, 256 if raw.dtype == np.uint8 else 65536), raw)
    raw = raw.astype(np.int64)
    lo = int(raw.min()) if raw.size else 0
    if lo >= 0 and int(raw.max()) < 65536:
        return np.take(_lookup(*key, 65536), raw)
    index = raw - first
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
        needed = top - first + 1
        noun = "value" if out_of_range.size == 1 else "values"
        dc_text = f" and not the don't-care value {dont_care}" if dont_care is not None else \
            " and the dataset has no don't-care value"
        others = [int(v) for v in out_of_range if v != top and v >= 0]
        nc_with_dc = max([data_cfg.label_nc] + [v - first + 1 for v in others])
        dc_fix = f"--label-nc {nc_with_dc} --dont-care {top}"   # complete: the other values must fit too
        # The numbers fit this file only; other files may hold higher values. Every file's message
        # therefore ends with the same command, which answers for the whole dataset at once.
        root = f" --root {data_cfg.root}" if data_cfg.root else ""
        return (f"label {noun} {values} outside the class range {first}..{last} (label_nc={data_cfg.label_nc})"
                f"{dc_text}. If the dataset has more classes pass --label-nc {needed} "
                f"(config data.label_nc); if {top} marks unlabelled pixels pass {dc_fix} "
                f"(config data.dont_care_value={top} with data.contain_dontcare=true). These numbers fit this "
                f"file; others may hold higher values: `spade-bench data check --dataset {data_cfg.dataset}{root}` "
                f"reads every file and prints the one command that fits them all")
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
    first = dataset_format(data_cfg.dataset).first_class_value
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[0].lstrip("-").isdigit():
            continue
        raw = int(parts[0])
        index = raw - first
        if 0 <= index < data_cfg.label_nc:
            names[index] = parts[1]
    # Per-class scores are keyed by name: two classes of one name would collapse into one entry.
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in seen:
            raise DataError(f"{path}: the name {name!r} is given to label values {seen[name] + first} and "
                            f"{index + first}; per-class scores are keyed by name, so the two classes would "
                            f"collapse into one: give each class its own name")
        seen[name] = index
    return names
