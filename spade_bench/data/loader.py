"""Datasets and data loaders: `build_dataset`, `build_dataloader`, `load_label_file`, `class_names`.

Every dataset yields the sample dict of docs/ARCHITECTURE.md. Real formats list their files
once and then read, check and transform each pair in `__getitem__`, raising the same
DataError that `spade-bench data check` prints. Datasets hold only paths and the config, so
they pickle cheaply into DataLoader workers.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from spade_bench.config import DataConfig
from spade_bench.data import files, formats
from spade_bench.data.formats import Pair, dataset_format
from spade_bench.data.palette import dataset_palette
from spade_bench.data.subset import evenly_spaced
from spade_bench.data.synthetic import DATASET_SEED, Scene, generate_scene, single_thread
from spade_bench.data.transforms import image_to_tensor, transform_image, transform_map, transform_params
from spade_bench.errors import ConfigError, DataError

# data.cache_scenes keeps a procedural split's scenes only while they fit in this much memory.
SCENE_CACHE_BYTES = 1 << 30


class PairError(DataError):
    """A problem with one file of a dataset.

    Args:
        path: the file at fault.
        reason: what is wrong and how to fix it.
    """

    def __init__(self, path: Union[str, Path], reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


# ============================================================================= one pair

def load_pair(pair: Pair, data_cfg: DataConfig) -> tuple[Any, np.ndarray, Optional[np.ndarray]]:
    """Read and check one pair: (RGB PIL image, class indices [H, W], instance int32 [H, W] or None)."""
    if pair.label is None:
        raise PairError(pair.image, "image without its label map (no label file with the same name)")
    if pair.image is None:
        raise PairError(pair.label, "label map without its image (no image file with the same name)")
    if pair.label.suffix.lower() in formats.JPEG_SUFFIXES:
        raise PairError(pair.label, "label map saved as JPEG: lossy compression changes the class values at "
                                    "every edge; save label maps as PNG (one class value per pixel)")
    try:
        image = files.read_image(pair.image)
    except DataError as e:
        raise _pair_error(pair.image, e) from None
    label = load_label_array_checked(pair.label, data_cfg)
    if label.shape != (image.height, image.width):
        hint = ""
        if label.shape == (image.width, image.height) or files.exif_orientation(pair.image) not in (None, 1):
            hint = (" The photo carries an EXIF orientation tag, so viewers show it rotated; the label was "
                    "probably drawn on the rotated view. Save the photo with the rotation applied "
                    "(e.g. PIL.ImageOps.exif_transpose) and no orientation tag")
        raise PairError(pair.image, f"image is {image.width}x{image.height} but its label map {pair.label} is "
                                    f"{label.shape[1]}x{label.shape[0]} (width x height); they must match.{hint}")
    instance = None
    if data_cfg.use_instance:
        if pair.instance is None:
            raise PairError(pair.image, "no instance map with the same name, but data.use_instance is on "
                                        "(set data.use_instance=false, or add the instance map)")
        try:
            instance = files.load_instance_array(pair.instance, pair.key)
        except DataError as e:
            raise _pair_error(pair.instance, e) from None
        if instance.shape != label.shape:
            raise PairError(pair.instance, f"instance map is {instance.shape[1]}x{instance.shape[0]} but the "
                                           f"image is {image.width}x{image.height}; they must match")
    return image, label, instance


def load_label_array_checked(path: Path, data_cfg: DataConfig) -> np.ndarray:
    """`files.load_label_array`, with its DataError turned into a PairError naming the file."""
    try:
        return files.load_label_array(path, data_cfg)
    except DataError as e:
        raise _pair_error(path, e) from None


def _pair_error(path: Path, error: DataError) -> PairError:
    message, prefix = str(error), f"{path}: "
    return PairError(path, message[len(prefix):] if message.startswith(prefix) else message)


def load_label_file(path: Union[str, Path], data_cfg: DataConfig) -> torch.Tensor:
    """A label file (index or colour PNG) -> class indices int64 [H, W], checked like the datasets do."""
    return torch.from_numpy(load_label_array_checked(Path(path), data_cfg).astype(np.int64))


# ============================================================================= datasets

def _sample(image: np.ndarray, label: np.ndarray, instance: Optional[np.ndarray], path: str,
            index: int) -> dict[str, Any]:
    sample: dict[str, Any] = {"image": image_to_tensor(image), "label": torch.from_numpy(label.astype(np.int64)),
                              "path": path, "index": index}
    if instance is not None:
        sample["instance"] = torch.from_numpy(instance.astype(np.int32))
    return sample


class PairedDataset(Dataset):
    """A dataset read from files (any format that lists pairs: all but the procedural one).

    Args:
        data_cfg: the data section of the run config.
        split: "train" or "val".
        pairs: the split's files, from `formats.list_pairs` (or the evenly spaced subset of them
            that data.max_val_images keeps).
        augment: random crop and flip (train) or a plain resize to image_size (val).
        listed: how many pairs the split lists before any subset (default: len(pairs)).
    """

    def __init__(self, data_cfg: DataConfig, split: str, pairs: list[Pair], *, augment: bool,
                 listed: Optional[int] = None):
        self.data_cfg, self.split, self.pairs, self.augment = data_cfg, split, list(pairs), augment
        self.listed = len(self.pairs) if listed is None else int(listed)

    def names(self) -> list[str]:
        """Each item's file, in order, as `sample_source` names it (relative to the root)."""
        return [sample_source(self, i) for i in range(len(self))]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        pair = self.pairs[index]
        image, label, instance = load_pair(pair, self.data_cfg)
        params = transform_params(self.data_cfg, label.shape, self.augment)
        image_array = transform_image(image, params, self.data_cfg.image_resize)
        label = transform_map(label, params)
        if instance is not None:
            instance = transform_map(instance, params)
        with single_thread():
            return _sample(image_array, label, instance, str(pair.image), index)


class SyntheticDataset(Dataset):
    """The procedural outdoor scenes, generated on the fly from (seed, split, index).

    Args:
        data_cfg: the data section of the run config (sizes, preprocess, use_instance).
        split: "train" or "val" (disjoint seed streams).
        length: number of scenes.
        augment: generate at load_size and random-crop and flip (train), or generate at
            image_size (val).
        seed: which scenes; the benchmark uses DATASET_SEED.
        indices: the scenes of the split's `length` that the dataset holds, in order (the evenly
            spaced subset data.max_val_images keeps); default all of them.
    """

    def __init__(self, data_cfg: DataConfig, split: str, length: int, *, augment: bool, seed: int = DATASET_SEED,
                 indices: Optional[list[int]] = None):
        self.data_cfg, self.split, self.length, self.augment, self.seed = data_cfg, split, length, augment, seed
        self.indices = list(range(length)) if indices is None else [int(i) for i in indices]
        self.listed = length
        # data.cache_scenes: a scene is a pure function of (seed, split, index), so each is drawn
        # once and cropped and flipped per use (bit-identical; a DataLoader worker keeps its own).
        height, width = self.stored_size()
        scene_bytes = height * width * (4 + 4 * int(data_cfg.use_instance))
        self._scenes: Optional[dict[int, Scene]] = (
            {} if data_cfg.cache_scenes and len(self.indices) * scene_bytes <= SCENE_CACHE_BYTES else None)

    def __len__(self) -> int:
        return len(self.indices)

    def names(self) -> list[str]:
        """Each item's name, in order, as `sample_source` names it ("synthetic/<split>/<scene index>")."""
        return [sample_source(self, i) for i in range(len(self))]

    def stored_size(self) -> tuple[int, int]:
        """The size scenes are generated at, before cropping."""
        cfg = self.data_cfg
        if self.augment and cfg.preprocess == "resize_and_crop":
            return int(round(cfg.load_size / cfg.aspect_ratio)), cfg.load_size
        return cfg.image_size

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.indices):
            raise IndexError(f"item {index} outside 0..{len(self.indices) - 1}")
        scene_index = self.indices[index]
        size = self.stored_size()
        with single_thread():
            scene = self._scenes.get(scene_index) if self._scenes is not None else None
            if scene is None:
                scene = generate_scene(self.seed, self.split, scene_index, size,
                                       with_instance=self.data_cfg.use_instance)
                if self._scenes is not None:
                    self._scenes[scene_index] = scene
            params = transform_params(self.data_cfg, size, self.augment)
            image = transform_image(scene.image, params, self.data_cfg.image_resize)
            label = transform_map(scene.label, params)
            instance = transform_map(scene.instance, params) if scene.instance is not None else None
            return _sample(image, label, instance, f"synthetic/{self.split}/{scene_index}", index)


def size_note(dataset, data_cfg: DataConfig) -> Optional[str]:
    """A plain note when training changes the photos' aspect ratio (a 480x360 photo at 64x64),
    from the first pair's size; None when it keeps it (or for synthetic data)."""
    if not isinstance(dataset, PairedDataset) or not dataset.pairs:
        return None
    pair = dataset.pairs[0]
    try:
        with Image.open(pair.image) as opened:
            width, height = opened.size
    except Exception:  # noqa: BLE001 - an unreadable file is reported when it is loaded
        return None
    aspect = width / height
    if abs(aspect - data_cfg.aspect_ratio) <= 0.01 * aspect:
        return None
    train_h, train_w = data_cfg.image_size
    return (f"the photos are {width}x{height} (W x H, aspect {aspect:.3g}) but training uses {train_w}x{train_h} "
            f"(data.aspect_ratio {data_cfg.aspect_ratio:g}), so they are resized and cropped to a different shape; "
            f"--set data.aspect_ratio={aspect:.4g} keeps their shape")


def _check_config(data_cfg: DataConfig) -> None:
    fmt = dataset_format(data_cfg.dataset)
    if data_cfg.dont_care_value is not None and not data_cfg.contain_dontcare and not fmt.dont_care_fixed:
        raise ConfigError(
            f"data.dont_care_value={data_cfg.dont_care_value} needs data.contain_dontcare=true "
            f"(the don't-care pixels get their own input channel)")
    classes = len(fmt.class_names or ())
    if fmt.procedural and data_cfg.label_nc < classes:
        raise ConfigError(f"the {fmt.name} scenes have {classes} classes; data.label_nc is "
                          f"{data_cfg.label_nc}; set data.label_nc={classes}")


def build_dataset(data_cfg: DataConfig, split: str, *, augment: Optional[bool] = None) -> Dataset:
    """The dataset of a split ("train" or "val"); augment defaults to split == "train".

    data.max_val_images keeps that many val items evenly spaced over the split's list
    (spade_bench.data.subset.evenly_spaced: the one subset rule), not the first ones."""
    if split not in ("train", "val"):
        raise ConfigError(f"split must be 'train' or 'val', got {split!r}")
    augment = split == "train" if augment is None else augment
    _check_config(data_cfg)
    limit = data_cfg.max_val_images if split == "val" else None
    if dataset_format(data_cfg.dataset).procedural:
        length = data_cfg.synthetic_train_size if split == "train" else data_cfg.synthetic_val_size
        indices = evenly_spaced(limit, length)
        if not indices:
            raise ConfigError(f"the synthetic {split} split is empty; set data.synthetic_{split}_size >= 1")
        return SyntheticDataset(data_cfg, split, length, augment=augment, indices=indices)

    pairs = formats.list_pairs(data_cfg, split)
    if not pairs:
        root = formats.dataset_root(data_cfg)
        raise DataError(f"{root}: no {split} pairs found for dataset {data_cfg.dataset!r}; check --root and "
                        f"the layout (spade-bench data check --dataset {data_cfg.dataset} --root {root})")
    incomplete = [p for p in pairs if p.image is None or p.label is None]
    if incomplete:
        # Missing files fail at once rather than mid-epoch; the message is the one `data check` prints.
        try:
            load_pair(incomplete[0], data_cfg)
        except PairError as e:
            more = f" (and {len(incomplete) - 1} more incomplete pairs; `spade-bench data check` lists them)" \
                if len(incomplete) > 1 else ""
            raise PairError(e.path, e.reason + more) from None
    listed = len(pairs)
    pairs = [pairs[i] for i in evenly_spaced(limit, len(pairs))]
    return PairedDataset(data_cfg, split, pairs, augment=augment, listed=listed)


# ============================================================================= loaders

def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: seed NumPy and `random` from the worker's torch seed."""
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


def build_dataloader(dataset: Dataset, batch_size: int = 1, *, shuffle: bool = False, sampler=None,
                     batch_sampler=None, num_workers: int = 0, drop_last: bool = False, seed: int = 0,
                     prefetch_factor: int = 4) -> DataLoader:
    """A DataLoader that keeps a GPU fed: worker processes, pinned memory, persistent workers, seeded.

    With `batch_sampler`, batch_size, shuffle, sampler and drop_last are the sampler's business.
    """
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    options: dict[str, Any] = dict(num_workers=num_workers, pin_memory=torch.cuda.is_available(),
                                   worker_init_fn=seed_worker, generator=generator,
                                   persistent_workers=num_workers > 0)
    if num_workers > 0:
        options["prefetch_factor"] = prefetch_factor
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, **options)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      drop_last=drop_last, **options)


# ============================================================================= class names

def class_names(data_cfg: DataConfig) -> list[str]:
    """One name per class index: the format's names (`DatasetFormat.class_names`: the synthetic
    classes, Cityscapes' ids), a root/label_names.txt (CMP Facades ships one) when present, else
    class_<i>."""
    n = data_cfg.label_nc
    fallback = [f"class_{i}" for i in range(n)]
    fmt = dataset_format(data_cfg.dataset)
    if fmt.class_names is not None and (n == len(fmt.class_names) or fmt.procedural):
        return list(fmt.class_names[:n]) + fallback[len(fmt.class_names):]
    if data_cfg.root:
        root = Path(data_cfg.root).expanduser()
        for candidate in (root / "label_names.txt", root / "train" / "label_names.txt"):
            names = files.read_label_names(candidate, data_cfg)
            if names is not None:
                return names
    return fallback


def dont_care_name(data_cfg: DataConfig) -> str:
    """What ROOT/label_names.txt calls the raw don't-care value ("void"), else "don't-care"."""
    value = files.raw_dont_care(data_cfg)
    if value is not None and data_cfg.root:
        root = Path(data_cfg.root).expanduser()
        for candidate in (root / "label_names.txt", root / "train" / "label_names.txt"):
            if candidate.is_file():
                for line in candidate.read_text(errors="replace").splitlines():
                    parts = line.split()
                    if len(parts) >= 2 and parts[0].lstrip("-").isdigit() and int(parts[0]) == value:
                        return parts[1]
    return "don't-care"


def class_legend(data_cfg: DataConfig) -> dict[str, Any]:
    """The colours label maps are drawn in, with their names (what a figure's legend shows):
    {"names": [label_nc], "colours": ["#rrggbb"] * label_nc, "dont_care": {"name", "colour",
    "value"} or None}."""
    palette = dataset_palette(data_cfg)
    hexes = ["#{:02x}{:02x}{:02x}".format(*(int(v) for v in colour)) for colour in palette]
    dont_care = None
    if data_cfg.contain_dontcare:
        dont_care = {"name": dont_care_name(data_cfg), "colour": hexes[data_cfg.label_nc],
                     "value": files.raw_dont_care(data_cfg)}
    return {"names": class_names(data_cfg), "colours": hexes[:data_cfg.label_nc], "dont_care": dont_care}


def sample_source(dataset: Dataset, index: int) -> str:
    """Where sample `index` comes from, without loading it: the image file (relative to the
    dataset root when inside it), or "synthetic/<split>/<scene index>"."""
    if isinstance(dataset, PairedDataset):
        path = Path(dataset.pairs[index].image or dataset.pairs[index].display_path)
        if dataset.data_cfg.root:
            try:
                return str(path.resolve().relative_to(Path(dataset.data_cfg.root).expanduser().resolve()))
            except ValueError:
                pass
        return str(path)
    if isinstance(dataset, SyntheticDataset):
        return f"synthetic/{dataset.split}/{dataset.indices[index]}"  # the scene, whatever subset holds it
    raise TypeError(f"no sample source for a {type(dataset).__name__}; expected a spade_bench.data dataset")
