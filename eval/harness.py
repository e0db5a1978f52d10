"""`spade-bench eval --run RUN`: generate every validation image with fixed seeds, score it,
and write RUN/eval/metrics.json with the full protocol record.

`evaluate_run` is three steps over one pass of the validation set, batch by batch:
1. render: generate the images not on disk yet (model.eval(), no_grad, per-image seeds,
   spade_bench.render) and write RUN/eval/images/NNNNN.png, plus real/ and labels/ (colour)
   at the evaluation size;
2. score: the requested metrics of the registry (spade_bench.metrics; `--metric`, default
   all), fed from the uint8 pixels as stored by two stages: the FID-Inception features of the
   generated images (and of the real ones, unless cached) for the feature metrics (FID, KID,
   precision, recall), and the segmenter's per-image counts on generated and on real images
   for the segmentation metrics (mIoU, pixel accuracy). After the pass each metric computes
   itself, and its reference: the same metric on real photos (the segmenter's ceiling; real
   train images against the real set of eval.real_set, the floor). Then how much the outputs
   depend on the label map;
3. record: metrics.json (schema in docs/ARCHITECTURE.md). Scores of the same images under the
   same protocol that an earlier metrics.json holds for metrics not asked for now are kept
   (`eval --metric X` adds X), with their versions, files and references.

A crash leaves finished PNGs behind; the next run generates only what is missing. If the
generation settings changed (checkpoint, seed, sizes, the validation files), all images are
generated again.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

import spade_bench.checkpoint as checkpoints
from eval.fid import FeatureExtractor, cached_real_statistics, dataset_fingerprint, real_stats_key, real_stats_path
from eval.images import eval_hw, from_uint8, load_image, resize_labels, resize_uint8, save_png, to_uint8
from eval.label_maps import IGNORE, LabelMapping, get_label_mapping
from eval.protocol import PER_IMAGE_SEED, build_protocol, code_state, per_image_seed
from eval.segmentation_metrics import batch_image_counts
from eval.segmenter import Segmenter, load_segmenter, run_segmenter_path, segmenter_train_command, sidecar_path
from spade_bench.config import TrainConfig, apply_overrides, config_hash, load_config_file
from spade_bench.data import (PairedDataset, build_dataset, class_legend, class_names, colorize_labels, sample_source,
                               semantic_input)
from spade_bench.data import files, formats
from spade_bench.data.subset import (NEIGHBOUR_THUMBNAIL, consecutive_warning, evenly_spaced, neighbour_similarity,
                                     subset_record)
from spade_bench.data.transforms import image_to_tensor, transform_image, transform_params
from spade_bench.discriminators import build_discriminator
from spade_bench.distributed import resolve_device, resolve_threads, torch_threads
from spade_bench.errors import ConfigError, EvalError
from spade_bench.io import atomic_write, atomic_write_json
from spade_bench.locks import folder_lock
from spade_bench.metrics import (COMMON_PROTOCOL_KEYS, Batch, Context, Metric, Score, get_metric, list_metrics,
                                 metric_keys, resolve_request, scored_versions)
from spade_bench.metrics.miou import per_class_iou
from spade_bench.nn import count_parameters
from spade_bench.numerics import apply_mode, cache_tag, numerics_state
from spade_bench.render import render
from spade_bench.run_folder import RunFolder, generation_manifest, read_json_or_empty, read_provenance

SCHEMA_VERSION = 1
# Label dependence (Figure 3 of the paper, and the degenerate-run flag): at most this many
# uniform single-class maps and real val label maps, rendered with one fixed z.
LABEL_DEPENDENCE_CLASSES = 16
LABEL_DEPENDENCE_MAPS = 8
# A run is degenerate when its outputs vary across real label maps by less than this share
# of how much the real photos of those label maps vary. Measured on the smoke preset (64 px,
# 200 steps): spade, whose outputs are one blurry scene (mIoU 14), 0.16; concat, which
# follows the labels (mIoU 35), 0.76; pix2pixhd, the same image for every map, 0.04.
DEGENERATE_SPREAD_FRACTION = 0.3


def requested_metrics(metric: str | list[str]) -> list[type[Metric]]:
    """The metrics a `--metric` choice scores (a name, an alias, "all" or several, comma-separated),
    each with the rest of its compute group, in column order."""
    return [get_metric(name) for name in resolve_request(metric)]


def apply_eval_overrides(cfg, overrides: Optional[list[str]]):
    """Apply `--set eval.k=v` overrides; anything outside eval.* would change the experiment."""
    overrides = list(overrides or [])
    for item in overrides:
        if not item.strip().startswith("eval."):
            raise ConfigError(f"--set {item!r}: evaluation only takes eval.* keys (e.g. eval.fid_protocol=tf); "
                              f"the rest of the config belongs to the trained run")
    return apply_overrides(cfg, overrides) if overrides else cfg


def num_eval_images(cfg, available: int) -> int:
    limits = [available] + [v for v in (cfg.data.max_val_images, cfg.eval.num_images) if v is not None]
    return max(0, min(limits))


def find_segmenter(cfg, device) -> Segmenter:
    """The evaluator the protocol names: eval.segmenter, or the dataset default in the cache.

    With eval.label_mapping, a user's TorchScript segmenter predicts the mapped classes (e.g. the
    19 Cityscapes trainIds) and `predicts_mapped` is True; ours predicts the dataset's ids,
    mapped after prediction. eval.segmenter_input_size sets `native_size`.
    """
    path = Path(cfg.eval.segmenter).expanduser() if cfg.eval.segmenter else run_segmenter_path(cfg)
    if not path.is_file():
        if cfg.eval.segmenter:
            raise EvalError(f"segmenter checkpoint {path} (eval.segmenter) does not exist; fix the path, or "
                            f"train the default one with: {segmenter_train_command(cfg)}")
        raise EvalError(f"no segmentation evaluator for {cfg.data.dataset} at "
                        f"{cfg.data.image_size[1]}x{cfg.data.image_size[0]} (W x H; looked for {path}); train it with: "
                        f"{segmenter_train_command(cfg)}   or pass --set eval.segmenter=PATH")
    mapping = get_label_mapping(cfg.eval.label_mapping, cfg.data.label_nc)
    mapped = mapping is not None and sidecar_path(path).is_file()
    segmenter = load_segmenter(path, mapping.num_classes if mapped else cfg.data.label_nc, device)
    segmenter.predicts_mapped = mapped
    segmenter.native_size = cfg.eval.segmenter_input_size == "native"
    return segmenter


# ----------------------------------------------------------------------------- setup

@dataclass
class _Evaluation:
    """What one evaluation works on (set up before anything is generated)."""

    run_dir: Path
    cfg: Any
    generator: torch.nn.Module
    encoder: Optional[torch.nn.Module]
    step: int
    device: torch.device
    val_set: Any
    count: int
    generation_hw: tuple[int, int]
    scoring_hw: tuple[int, int]
    out: Path
    manifest: dict[str, Any]


def _prepare(run_dir: Path, checkpoint: str, device: str, overrides: Optional[list[str]],
             metrics: list[type[Metric]], out: Optional[Path] = None) -> _Evaluation:
    folder = RunFolder(run_dir)
    device = resolve_device(str(device))
    cfg, generator, encoder, step = checkpoints.load_generator(run_dir, checkpoint, device)
    cfg = apply_eval_overrides(cfg, overrides)
    generator.eval()
    if encoder is not None:
        encoder.eval()
    data = cfg.data
    class_names(data)   # a label_names.txt that names two classes alike fails here, before any generation
    val_set = build_dataset(data, "val", augment=False)
    count = num_eval_images(cfg, len(val_set))
    if 0 < count < len(val_set):
        # eval.num_images below data.max_val_images: the same rule, once, over the whole list.
        val_set = build_dataset(replace(data, max_val_images=count), "val", augment=False)
    if count == 0:
        raise EvalError(f"the validation split of {data.dataset} (root {data.root}) has no images to evaluate")
    needy = [m for m in metrics if count < m.min_images]
    if needy:
        names = [m.short for m in needy]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        raise EvalError(f"{listed} need{'s' if len(names) == 1 else ''} at least {max(m.min_images for m in needy)} "
                        f"images; only {count} would be evaluated "
                        f"(eval.num_images={cfg.eval.num_images}, data.max_val_images={data.max_val_images})")
    generation_hw = tuple(data.image_size)
    scoring_hw = eval_hw(generation_hw, cfg.eval.eval_size)
    manifest = {"checkpoint_step": step, "seed": cfg.eval.seed,
                "generation_size": list(generation_hw), "eval_size": list(scoring_hw),
                "image_resize": data.image_resize, "dataset": data.dataset, "root": data.root,
                "vae_z": _vae_z(cfg, encoder),
                # Validation photos edited in place (or other files) make every stored image stale.
                "val_images": dataset_fingerprint(val_set, range(count))}
    return _Evaluation(run_dir, cfg, generator, encoder, step, device, val_set, count, generation_hw,
                       scoring_hw, Path(out) if out is not None else folder.eval, manifest)


def _start_output(ev: _Evaluation) -> bool:
    """Create RUN/eval/; drop stored images made with other generation settings. Returns whether
    the stored images (and so an earlier metrics.json's scores) were made with these settings."""
    for sub in ("images", "real", "labels"):
        (ev.out / sub).mkdir(parents=True, exist_ok=True)
    manifest_path = generation_manifest(ev.out)
    same = read_json_or_empty(manifest_path) == ev.manifest
    if not same:
        stale = [p for sub in ("images", "real", "labels") for p in (ev.out / sub).glob("*.png")]
        if stale:
            warnings.warn(f"{ev.out / 'images'} holds images from other generation settings "
                          f"(checkpoint, seed, sizes or validation files); deleting them and generating all again")
        # Delete before writing the new manifest: an interrupted run must never mix old and new images.
        for path in stale:
            path.unlink()
        manifest_path.unlink(missing_ok=True)
    atomic_write_json(manifest_path, ev.manifest)
    return same


# ----------------------------------------------------------------------------- step 1: render

def _render_batch(ev: _Evaluation, sample: dict[str, Any], indices: list[int],
                  timings: dict[str, float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Generated, real (uint8 at the scoring size) and label maps of one batch; generates and
    writes only the images not on disk yet. Returns (fake, real, labels, number generated)."""
    cfg, out, scoring_hw, resize_mode = ev.cfg, ev.out, ev.scoring_hw, ev.cfg.data.image_resize
    paths = [out / "images" / f"{i:05d}.png" for i in indices]
    missing = [k for k, p in enumerate(paths) if not p.is_file()]
    fakes: list[Optional[torch.Tensor]] = [None] * len(indices)
    if missing:
        t0 = time.perf_counter()
        images = render(ev.generator, _segmap(sample, ev), [per_image_seed(cfg.eval.seed, i) for i in indices],
                        use_vae=bool(cfg.generator.use_vae), z_dim=cfg.generator.z_dim, encoder=ev.encoder,
                        style=sample["image"] if ev.encoder is not None else None)
        images = resize_uint8(to_uint8(images.float().cpu()), scoring_hw, resize_mode)
        for k in missing:
            save_png(images[k], paths[k])
            fakes[k] = images[k]
        timings["generate_s"] += time.perf_counter() - t0
    for k, p in enumerate(paths):
        if fakes[k] is None:
            fakes[k] = _read_png(p, scoring_hw)
    real = resize_uint8(to_uint8(sample["image"]), scoring_hw, resize_mode)
    labels = resize_labels(sample["label"].long(), scoring_hw)
    for k, i in enumerate(indices):
        if not (out / "real" / f"{i:05d}.png").is_file():
            save_png(real[k], out / "real" / f"{i:05d}.png")
        if not (out / "labels" / f"{i:05d}.png").is_file():
            # The training grids' palette: don't-care gets its own colour, distinct from every class.
            save_png(colorize_labels(labels[k], cfg.data), out / "labels" / f"{i:05d}.png")
    return torch.stack(fakes), real, labels, len(missing)


def _segmap(sample: dict[str, Any], ev: _Evaluation) -> torch.Tensor:
    label = sample["label"].to(ev.device)
    instance = sample.get("instance")
    return semantic_input(label, instance.to(ev.device) if instance is not None else None, ev.cfg.data)


def _read_png(path: Path, size_hw: tuple[int, int]) -> torch.Tensor:
    image = load_image(path)
    if tuple(image.shape[-2:]) != tuple(size_hw):
        raise EvalError(f"{path} is {image.shape[-1]}x{image.shape[-2]}, expected {size_hw[1]}x{size_hw[0]} (W x H); "
                        f"delete {path.parent} to generate again")
    return image


# ----------------------------------------------------------------------------- step 2: score

@dataclass
class _Scores:
    """Feeds the requested metrics (spade_bench.metrics) batch by batch: the generated images'
    FID features for the feature metrics, the segmenter's per-image counts for the
    segmentation metrics; `finish` computes them and their references."""

    ev: _Evaluation
    extractor: Optional[FeatureExtractor]
    segmenter: Optional[Segmenter]
    metrics: list[type[Metric]]
    stats_path: Optional[Path] = None
    stats_meta: Optional[dict[str, Any]] = None
    fake_features: list[np.ndarray] = field(default_factory=list)
    real_features: list[np.ndarray] = field(default_factory=list)
    image_counts: list[dict[str, np.ndarray]] = field(default_factory=list)
    scoring: dict[str, Metric] = field(default_factory=dict)     # name -> instance fed the generated images
    on_real: dict[str, Metric] = field(default_factory=dict)     # segmentation references: fed the real photos
    num_classes: int = 0
    ignore_index: Optional[int] = None
    need_real_features: bool = False
    mapping: Optional[LabelMapping] = None
    real_set: Any = None  # the real photos the feature metrics compare against (eval.real_set)

    def __post_init__(self):
        data, settings = self.ev.cfg.data, self.ev.cfg.eval
        self.real_set = self.ev.val_set if settings.real_set == "val" else _test_photos(data)
        self.scoring = {m.name: m.from_settings(settings) for m in self.metrics}
        if self.extractor is not None:
            # For the validation photos, the fingerprint _prepare computed for the manifest.
            fingerprint = self.ev.manifest["val_images"] if self.real_set is self.ev.val_set else None
            self.stats_meta = real_stats_key(data, settings.real_set, self.real_set,
                                             _real_indices(self.ev, self.real_set), self.ev.scoring_hw, self.extractor,
                                             fingerprint=fingerprint)
            self.stats_path = real_stats_path(self.stats_meta)
        # Real features come with the validation batches; test photos are read on their own.
        self.need_real_features = (self.extractor is not None and not self.stats_path.is_file()
                                   and self.real_set is self.ev.val_set)
        if self.segmenter is not None:
            self.mapping = get_label_mapping(settings.label_mapping, data.label_nc)
            if self.mapping is not None:
                self.num_classes, self.ignore_index = self.mapping.num_classes, IGNORE
            else:
                self.num_classes = data.label_nc
                self.ignore_index = data.label_nc if data.contain_dontcare else None
            self.on_real = {m.name: m.from_settings(settings) for m in self.metrics
                            if m.inputs == "segmentation" and m.reference is not None}

    def _predict(self, images: torch.Tensor) -> torch.Tensor:
        labels = self.segmenter.predict(from_uint8(images).to(self.ev.device)).cpu()
        if self.mapping is not None and not getattr(self.segmenter, "predicts_mapped", False):
            labels = self.mapping.apply(labels)
        return labels

    def _feed(self, inputs: str, batch: Batch, metrics: dict[str, Metric]) -> None:
        for name, metric in metrics.items():
            if metric.inputs == inputs:
                metric.update(batch)

    def update(self, fake: torch.Tensor, real: torch.Tensor, labels: torch.Tensor, timings: dict[str, float]) -> None:
        if self.extractor is not None:
            t0 = time.perf_counter()
            features = self.extractor(fake)
            self.fake_features.append(features)
            if self.need_real_features:
                self.real_features.append(self.extractor(real))
            self._feed("features", Batch(fake_features=features), self.scoring)
            timings["fid_s"] += time.perf_counter() - t0
        if self.segmenter is not None:
            t0 = time.perf_counter()
            if self.mapping is not None:
                labels = self.mapping.apply(labels)
            counts = batch_image_counts(self._predict(fake), labels, self.num_classes, self.ignore_index)
            self.image_counts.append(counts)
            self._feed("segmentation", Batch(counts=counts), self.scoring)
            real_counts = batch_image_counts(self._predict(real), labels, self.num_classes, self.ignore_index)
            self._feed("segmentation", Batch(counts=real_counts), self.on_real)
            timings["segment_s"] += time.perf_counter() - t0

    def finish(self, progress: bool) -> dict[str, Any]:
        """Per scored metric: its Score and its reference value; plus the files, the per-class
        IoU and what the feature stage used."""
        ev, cfg = self.ev, self.ev.cfg
        scores: dict[str, Score] = {}
        references: dict[str, Optional[float]] = {}
        files: dict[str, Optional[str]] = {}
        per_class: dict[str, Optional[float]] = {}
        per_class_real: dict[str, Optional[float]] = {}
        context = Context()
        if self.extractor is not None:
            fake_array = np.concatenate(self.fake_features).astype(np.float32)
            atomic_write(ev.out / "fake_features.npy", lambda f: np.save(f, fake_array))
            files["fake_features"] = "fake_features.npy"
            compute = (lambda: np.concatenate(self.real_features)) if self.real_set is ev.val_set else \
                (lambda: _real_features(ev, self.extractor, self.real_set))
            real_stats = cached_real_statistics(self.stats_path, compute, self.stats_meta)
            files["real_stats"] = str(self.stats_path.resolve())
            context = Context(real_features=real_stats.features)
        if self.segmenter is not None:
            counts = {name: np.concatenate([c[name] for c in self.image_counts]) for name in ("tp", "fp", "fn", "valid")}
            atomic_write(ev.out / "per_image_counts.npz", lambda f: np.savez(f, **counts))
            files["per_image_counts"] = "per_image_counts.npz"
            names = list(self.mapping.class_names) if self.mapping is not None else list(class_names(cfg.data))
            iou = per_class_iou(*(counts[k].sum(0).astype(np.float64) for k in ("tp", "fp", "fn")))
            per_class = {name: (None if math.isnan(v) else 100.0 * v) for name, v in zip(names, iou.tolist())}
            # The same on the real photos: each class's ceiling (what the segmenter itself sees).
            real = next((m.sums() for m in self.on_real.values() if hasattr(m, "sums") and m.sums() is not None),
                        None)
            if real is not None:
                per_class_real = {name: (None if math.isnan(v) else 100.0 * v)
                                  for name, v in zip(names, per_class_iou(*real).tolist())}
        for metric in self.metrics:
            score = self.scoring[metric.name].compute(context)
            scores[metric.name] = score
            for message in score.warnings:
                warnings.warn(message)
            if metric.reference is not None:
                references[metric.reference.key] = self._reference(metric, context)
        return {"scores": scores, "references": references, "files": files, "per_class_iou": per_class,
                "per_class_iou_real": per_class_real}

    def _reference(self, metric: type[Metric], context: Context) -> Optional[float]:
        """The metric with real photos in place of the generated ones: the segmenter on the
        real validation photos (the ceiling), or real training photos against the real set
        (the floor)."""
        if metric.inputs == "segmentation":
            return self.on_real[metric.name].compute(context).value
        features = _train_features(self.ev, self.extractor, metric.min_images)
        if features is None:
            return None
        on_train = metric.from_settings(self.ev.cfg.eval)
        on_train.update(Batch(fake_features=features))
        return on_train.compute(context).value


class _TestPhotos(PairedDataset):
    """A dataset's test photos, prepared as its validation photos are (labels are not read)."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.pairs[index].image
        image = files.read_image(path)
        params = transform_params(self.data_cfg, (image.height, image.width), False)
        return {"image": image_to_tensor(transform_image(image, params, self.data_cfg.image_resize)),
                "path": str(path), "index": index}


def _test_photos(data) -> _TestPhotos:
    """eval.real_set=test: the photos in the folder the dataset's format file declares
    (`DatasetFormat.test_photos`, spade_bench/data/formats/)."""
    layout = formats.dataset_format(data.dataset).test_photos
    if layout is None:
        known = [name for name, fmt in formats.FORMATS.items() if fmt.test_photos is not None]
        raise EvalError(f"eval.real_set=test: spade-bench knows no test photos for {data.dataset} "
                        f"(it does for {', '.join(known)}); use eval.real_set=val")
    folder = formats.dataset_root(data).joinpath(*layout)
    photos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in formats.IMAGE_SUFFIXES)
    if len(photos) < 2:
        raise EvalError(f"eval.real_set=test: {folder} holds {len(photos)} photos, FID/KID need "
                        f"at least 2; put the test photos there or use eval.real_set=val")
    return _TestPhotos(data, "test", [formats.Pair(p.stem, p, None) for p in photos], augment=False)


def _real_indices(ev: _Evaluation, real_set) -> list[int]:
    """Which real photos: the evaluated validation ones, or as many test photos evenly spaced."""
    if real_set is ev.val_set:
        return list(range(ev.count))
    return evenly_spaced(ev.count, len(real_set))


def _photo_features(ev: _Evaluation, extractor: FeatureExtractor, dataset, indices: list[int],
                    name: str) -> np.ndarray:
    """FID features of a set's photos at `indices`, prepared as the validation photos are (uint8 at
    the scoring size)."""
    loader = DataLoader(Subset(dataset, indices), batch_size=ev.cfg.eval.batch_size, shuffle=False,
                        num_workers=ev.cfg.data.num_workers)
    batches = (resize_uint8(to_uint8(s["image"]), ev.scoring_hw, ev.cfg.data.image_resize) for s in loader)
    return extractor.extract(batches, total=len(indices), desc=f"FID features (real {name})")


def _real_features(ev: _Evaluation, extractor: FeatureExtractor, real_set) -> np.ndarray:
    return _photo_features(ev, extractor, real_set, _real_indices(ev, real_set), "test")


def _train_features(ev: _Evaluation, extractor: FeatureExtractor, min_images: int) -> Optional[np.ndarray]:
    """Features of real training images (the evaluated count, evenly spaced, no augmentation),
    at the same protocol and size; cached like the real statistics. None when fewer than
    `min_images` exist. Against the real set the feature metrics compare with (eval.real_set:
    the validation or the test photos) they give the floor a generator can approach."""
    data = ev.cfg.data
    train_set = build_dataset(data, "train", augment=False)
    indices = evenly_spaced(ev.count, len(train_set))
    if len(indices) < max(2, min_images):
        return None
    meta = real_stats_key(data, "train", train_set, indices, ev.scoring_hw, extractor)
    train_stats = cached_real_statistics(real_stats_path(meta),
                                         lambda: _photo_features(ev, extractor, train_set, indices, "train"), meta)
    return train_stats.features


# ----------------------------------------------------------------------------- label dependence

def _mean_pairwise_distance(images: torch.Tensor) -> float:
    """Mean absolute pixel difference (in [0, 1] units) over all pairs of uint8 images [N, 3, H, W]."""
    flat = images.reshape(images.shape[0], -1).double() / 255
    n = flat.shape[0]
    if n < 2:
        return float("nan")
    total = sum(float((flat[i + 1:] - flat[i]).abs().mean(dim=1).sum()) for i in range(n - 1))
    return total / (n * (n - 1) / 2)


def _render_fixed_z(ev: _Evaluation, labels: torch.Tensor, instances: Optional[torch.Tensor]) -> torch.Tensor:
    """uint8 renderings of label maps [N, H, W], all with the same seed (one fixed z), in batches."""
    cfg = ev.cfg
    seed = per_image_seed(cfg.eval.seed, 0)
    outputs = []
    for start in range(0, labels.shape[0], cfg.eval.batch_size):
        label = labels[start:start + cfg.eval.batch_size].to(ev.device)
        instance = instances[start:start + cfg.eval.batch_size].to(ev.device) if instances is not None else None
        segmap = semantic_input(label, instance, cfg.data)
        image = render(ev.generator, segmap, [seed] * label.shape[0], use_vae=bool(cfg.generator.use_vae),
                       z_dim=cfg.generator.z_dim)
        outputs.append(to_uint8(image.float().cpu()))
    return torch.cat(outputs)


def label_dependence(ev: _Evaluation) -> dict[str, Any]:
    """How much the outputs depend on the label map, at one fixed z (the prior's, for VAE runs).

    - uniform_distinctness: mean pairwise distance between the outputs for uniform single-class
      label maps (up to LABEL_DEPENDENCE_CLASSES classes). The paper's Figure 3: a normalisation
      layer fed the label map directly (pix2pixHD) washes a uniform map out; SPADE keeps it.
    - label_spread: mean pairwise distance between the outputs for LABEL_DEPENDENCE_MAPS real
      validation label maps, evenly spaced over the evaluated ones.
    - degenerate: label_spread below DEGENERATE_SPREAD_FRACTION of the mean pairwise distance
      between the real photos of those label maps: the outputs barely depend on the label map.
    Distances are mean absolute pixel differences in [0, 1] at the generation size.
    """
    cfg, data = ev.cfg, ev.cfg.data
    classes = np.unique(np.linspace(0, data.label_nc - 1, min(data.label_nc, LABEL_DEPENDENCE_CLASSES))
                        .round().astype(int)).tolist()
    height, width = ev.generation_hw
    uniform = torch.tensor(classes, dtype=torch.long)[:, None, None].expand(-1, height, width).contiguous()
    # One object per map: an instance map equal to the label map has no edges.
    uniform_outputs = _render_fixed_z(ev, uniform, uniform.to(torch.int32) if data.use_instance else None)

    maps = min(ev.count, LABEL_DEPENDENCE_MAPS)
    samples = [ev.val_set[i] for i in evenly_spaced(maps, ev.count)]
    labels = torch.stack([s["label"].long() for s in samples])
    instances = torch.stack([s["instance"] for s in samples]) if data.use_instance else None
    spread_outputs = _render_fixed_z(ev, labels, instances)
    photos = to_uint8(torch.stack([s["image"] for s in samples]))
    uniform_distinctness = _mean_pairwise_distance(uniform_outputs)
    label_spread = _mean_pairwise_distance(spread_outputs)
    real_spread = _mean_pairwise_distance(photos)
    degenerate = None
    if math.isfinite(label_spread) and math.isfinite(real_spread):
        degenerate = bool(label_spread < DEGENERATE_SPREAD_FRACTION * real_spread)
    rule = (f"degenerate when label_spread < {DEGENERATE_SPREAD_FRACTION} x the real photos' spread "
            f"({real_spread:.4f}) over the same {maps} validation label maps (evenly spaced over the scored "
            f"ones); distances are mean absolute pixel differences in [0, 1] over all pairs, at "
            f"{width}x{height} (W x H), one fixed z (seed {per_image_seed(cfg.eval.seed, 0)}); "
            f"uniform_distinctness over {len(classes)} uniform single-class maps")
    return {"uniform_distinctness": uniform_distinctness, "label_spread": label_spread,
            "degenerate": degenerate, "rule": rule}


# ----------------------------------------------------------------------------- step 3: record

def eval_subset(ev: _Evaluation, thumbnails: np.ndarray) -> dict[str, Any]:
    """metrics.json `eval_subset`: which validation files were scored (names, their sha256, the
    rule that chose them, the split rule) and whether neighbouring ones look like consecutive
    frames (spade_bench.data.subset); warns when they do."""
    record = subset_record(ev.val_set.names(), ev.val_set.listed, formats.split_rule(ev.cfg.data))
    record["neighbours"] = neighbour_similarity(thumbnails)
    if record["neighbours"]["consecutive"]:
        warnings.warn(consecutive_warning(record["neighbours"], ev.count))
    return record


def _run_section(run_dir: Path, cfg, generator) -> dict[str, Any]:
    try:
        discriminator_params = count_parameters(build_discriminator(cfg))
    except Exception:  # noqa: BLE001 - a parameter count must not block an evaluation
        discriminator_params = None
    folder = RunFolder(run_dir)
    summary = read_json_or_empty(folder.summary)
    env = read_json_or_empty(folder.env)
    perceptual = cfg.loss.perceptual if cfg.loss.lambda_perceptual > 0 else "none"
    return {
        "dir": str(run_dir.resolve()), "variant": cfg.variant, "seed": cfg.train.seed, "preset": cfg.preset,
        "dataset": cfg.data.dataset, "config_hash": config_hash(cfg),
        "generator_params": count_parameters(generator), "discriminator_params": discriminator_params,
        "perceptual": perceptual, "steps": cfg.train.steps, "ema": cfg.train.ema,
        "hardware": summary.get("hardware") or env.get("gpu") or summary.get("device") or env.get("device"),
        "train_images_per_s": summary.get("images_per_s"),
        "train_peak_memory_gib": summary.get("peak_memory_gib"),
        # Where the weights came from (an NVlabs import writes it); null for our own training.
        "provenance": read_provenance(run_dir),
    }


def _stage_protocol(ev: _Evaluation, scores: _Scores) -> dict[str, Any]:
    """The protocol values the two scoring stages set (None for a stage that did not run)."""
    cfg, extractor, segmenter = ev.cfg, scores.extractor, scores.segmenter
    return {
        "label_resize": "nearest",
        "fid_protocol": cfg.eval.fid_protocol if extractor is not None else None,
        "fid_extractor_sha256": extractor.weights_sha256 if extractor is not None else None,
        "segmenter": segmenter.name if segmenter is not None else None,
        "segmenter_sha256": segmenter.sha256 if segmenter is not None else None,
        "segmenter_input": segmenter.describe_input() if segmenter is not None else None,
        "kid_subsets": None, "kid_subset_size": None,   # set by KID's compute when it is scored
        # Protocol switches for released weights (README, "Released weights").
        "label_mapping": cfg.eval.label_mapping, "segmenter_input_size": cfg.eval.segmenter_input_size,
        "real_set": cfg.eval.real_set,
    }


def _metric_keys_of(metric: type[Metric]) -> set[str]:
    """The protocol keys a metric's value depends on or records."""
    return set(COMMON_PROTOCOL_KEYS) | set(metric.protocol_keys) | set(metric.recorded_keys)


# Protocol values that fix which images were scored: an earlier record's scores are kept only
# when these match (with the generation manifest: an interrupted regeneration leaves a stale
# metrics.json behind a fresh manifest).
_SAME_IMAGES_KEYS = ("generation_size", "eval_size", "num_images", "image_resize", "seeds", "vae_z",
                     "eval_subset_sha256", "generation_manifest_sha256")


def _earlier_scores(ev: _Evaluation, earlier: dict[str, Any], protocol: dict[str, Any], scored_now: list[str],
                    images_kept: bool) -> tuple[list[str], dict[str, str]]:
    """Which metrics of the earlier metrics.json stay in the new one: (kept, {dropped: why}).

    `eval --metric X` after `--metric all` keeps the other scores (and their versions, files and
    references) when they were computed from the same images (checkpoint, config, generation
    settings) under protocol values the new evaluation does not change."""
    held = [name for name in scored_versions(earlier) if name not in scored_now]
    if not held:
        return [], {}
    old_protocol = earlier.get("protocol") if isinstance(earlier.get("protocol"), dict) else {}
    run = earlier.get("run") if isinstance(earlier.get("run"), dict) else {}
    why = None
    if earlier.get("schema") != SCHEMA_VERSION:
        why = f"metrics.json schema {earlier.get('schema')!r}"
    elif not images_kept or earlier.get("checkpoint_step") != ev.step:
        why = "the generated images were made again (checkpoint or generation settings changed)"
    elif run.get("config_hash") != config_hash(ev.cfg):
        why = "the run's config changed"
    else:
        differ = [k for k in _SAME_IMAGES_KEYS if k in old_protocol and old_protocol[k] != protocol.get(k)]
        if differ:
            why = f"the images differ ({', '.join(differ)})"
    if why is not None:
        return [], {name: why for name in held}
    in_use = set().union(*(_metric_keys_of(get_metric(name)) for name in scored_now))
    kept, dropped = [], {}
    for name in held:
        metric = get_metric(name)
        changed = [k for k in sorted(set(COMMON_PROTOCOL_KEYS) | set(metric.protocol_keys))
                   if k in in_use and old_protocol.get(k) != protocol.get(k)]
        if changed:
            dropped[name] = f"scored under other {', '.join(changed)} than this evaluation's"
        else:
            kept.append(name)
    return kept, dropped


def _record(ev: _Evaluation, scores: _Scores, scored: dict[str, Any], dependence: dict[str, Any],
            subset: dict[str, Any], *,
            metric: str, checkpoint: str, timings: dict[str, float], generated: int, wall: float,
            images_kept: bool, numerics: dict[str, Any]) -> dict[str, Any]:
    cfg = ev.cfg
    resize_mode = cfg.data.image_resize
    work = timings["generate_s"] + timings["fid_s"] + timings["segment_s"]
    scored_now = [m.name for m in scores.metrics]
    stage = _stage_protocol(ev, scores)
    for name in scored_now:
        stage.update(scored["scores"][name].protocol)
    protocol = build_protocol(
        num_images=ev.count, generation_size=list(ev.generation_hw), eval_size=list(ev.scoring_hw),
        image_resize=(f"dataset: {resize_mode}; to eval size: "
                      f"{'none' if ev.scoring_hw == ev.generation_hw else resize_mode + ' (torch, antialias)'}"),
        seeds={"eval_seed": cfg.eval.seed, "per_image": PER_IMAGE_SEED, "kid_subsets": cfg.eval.seed},
        wall_time_s=wall, metrics=scored_now,
        metric=metric if isinstance(metric, str) else ",".join(metric), checkpoint=checkpoint,
        device=str(ev.device), vae_z=ev.manifest["vae_z"],
        checkpoint_step=ev.step, eval_subset_sha256=subset["sha256"],
        generation_manifest_sha256=hashlib.sha256(json.dumps(ev.manifest, sort_keys=True).encode()).hexdigest(),
        timings={**timings, "generated_images": generated,
                 "images_per_s": (ev.count / work) if work > 0 else None},
        **stage,
    )
    metrics_path = ev.out / RunFolder(ev.run_dir).metrics.name
    earlier = read_json_or_empty(metrics_path)
    kept, dropped = _earlier_scores(ev, earlier, protocol, scored_now, images_kept)
    by_reason: dict[str, list[str]] = {}
    for name, why in dropped.items():
        by_reason.setdefault(why, []).append(name)
    for why, names in by_reason.items():
        warnings.warn(f"{', '.join(names)} from the earlier {metrics_path} "
                      f"{'is' if len(names) == 1 else 'are'} dropped: {why}; score "
                      f"{'it' if len(names) == 1 else 'them'} again with "
                      f"`spade-bench eval --run {ev.run_dir} --metric {','.join(names)}`")
    metrics: dict[str, Any] = dict.fromkeys(metric_keys())
    references: dict[str, Any] = {m.reference.key: None for m in list_metrics() if m.reference is not None}
    metric_warnings: dict[str, list[str]] = {}
    files: dict[str, Any] = dict.fromkeys(key for m in list_metrics() for key in m.files)
    files.update(scored["files"])
    per_class, per_class_real = scored["per_class_iou"], scored["per_class_iou_real"]
    versions = dict(protocol["metric_versions"])
    old = {key: earlier.get(key) if isinstance(earlier.get(key), dict) else {}
           for key in ("metrics", "references", "files", "protocol", "metric_warnings", "per_class_iou",
                       "per_class_iou_real")}
    old_versions = old["protocol"].get("metric_versions") if isinstance(old["protocol"].get("metric_versions"), dict) \
        else {}
    now_uses = set().union(*(_metric_keys_of(get_metric(name)) for name in scored_now))
    for name in kept:
        metric = get_metric(name)
        for key in (name, *metric.extras):
            metrics[key] = old["metrics"].get(key)
        if metric.reference is not None:
            references[metric.reference.key] = old["references"].get(metric.reference.key)
        for key in metric.files:
            if files.get(key) is None:
                files[key] = old["files"].get(key)
        for key in _metric_keys_of(metric) - now_uses:
            protocol[key] = old["protocol"].get(key)
        if old_versions.get(name) is not None:
            versions[name] = old_versions[name]
        metric_warnings[name] = list(old["metric_warnings"].get(name, []))
        if metric.inputs == "segmentation" and scores.segmenter is None:
            per_class, per_class_real = old["per_class_iou"], old["per_class_iou_real"]
    for name in scored_now:
        score: Score = scored["scores"][name]
        metrics[name] = score.value
        metrics.update(score.extras)
        metric_warnings[name] = list(score.warnings)
        reference = get_metric(name).reference
        if reference is not None:
            references[reference.key] = scored["references"].get(reference.key)
    order = [m.name for m in list_metrics()]
    protocol["metric_versions"] = {name: versions[name] for name in order if name in versions}
    metric_warnings = {name: metric_warnings[name] for name in order if metric_warnings.get(name)}
    messages = list(dict.fromkeys(w for ws in metric_warnings.values() for w in ws))
    if kept and "metric_warnings" not in earlier:
        # A record from before per-metric warnings: keep what it said, unattributed.
        messages += [w for w in earlier.get("warnings") or [] if isinstance(w, str) and w not in messages]
    if subset["neighbours"]["consecutive"]:
        messages.append(consecutive_warning(subset["neighbours"], ev.count))
    result = {
        "schema": SCHEMA_VERSION,
        "code": code_state(),
        "run": _run_section(ev.run_dir, cfg, ev.generator),
        "checkpoint_step": ev.step,
        "metrics": metrics,
        "per_class_iou": per_class,
        "per_class_iou_real": per_class_real,
        # What the report's legend and sample rows name: class colours, and each sample's file.
        "classes": class_legend(cfg.data),
        "sample_files": _sample_files(ev),
        "references": references,
        "label_dependence": dependence,
        "eval_subset": subset,
        "protocol": protocol,
        "files": files,
        "warnings": messages,
        "metric_warnings": metric_warnings,
        "numerics": numerics,   # what decided these bits (spade_bench/numerics.py), flat
    }
    atomic_write_json(metrics_path, _finite(result))
    return result


# Sample files named in metrics.json (the report's sample grid shows the first few).
SAMPLE_FILES = 16


def _sample_files(ev: _Evaluation) -> dict[str, str]:
    """{"NNNNN.png": the validation file it renders} for the first stored images."""
    names = sorted(p.name for p in (ev.out / "images").glob("*.png") if p.stem.isdigit())[:SAMPLE_FILES]
    return {name: sample_source(ev.val_set, int(Path(name).stem)) for name in names
            if int(Path(name).stem) < len(ev.val_set)}


def _vae_z(cfg, encoder) -> Optional[str]:
    if not cfg.generator.use_vae:
        return None
    if encoder is not None:
        return "posterior of the real photo: mu + eps * exp(logvar / 2), eps from the per-image seed"
    return "prior: N(0, I) from the per-image seed"


def _finite(value: Any) -> Any:
    """JSON has no NaN: non-finite floats become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# ----------------------------------------------------------------------------- entry point

def evaluate_run(run_dir: str | Path, *, metric: str = "all", checkpoint: str = "latest",
                 device: str = "auto", overrides: Optional[list[str]] = None,
                 progress: bool = True, out: Optional[str | Path] = None,
                 break_lock: bool = False) -> dict[str, Any]:
    """Evaluate a training run; writes RUN/eval/ and returns the metrics.json content.

    `out`: write the evaluation folder (images, metrics.json, ...) there instead of RUN/eval/;
    the learning curve's points (eval/curve.py) go to RUN/eval/curve/step_XXXXXXX/.

    Holds the evaluation folder's lock (`spade_bench.locks`, EVAL/.lock) throughout: a second
    evaluation into the same folder is refused, naming the first, instead of scoring a mixture of
    both's images; `break_lock` clears a stale lock (its process is dead). Runs in the run's
    numerics (train.numerics) on its train.threads threads, the count every phase of a run uses
    (0: the process's own share of the cores), not whatever thread count earlier work left, so
    the same command gives the same scores."""
    folder = RunFolder(run_dir)
    if not folder.config.is_file():
        raise EvalError(f"{run_dir} is not a run directory (no {folder.config.name}); pass the folder `train --out` wrote")
    train = _run_train_settings(Path(run_dir))
    mode = apply_mode(train.numerics, train.threads)
    lock = Path(out) / folder.eval_lock.name if out is not None else folder.eval_lock
    with folder_lock(lock, "evaluation folder", break_lock=break_lock), torch_threads(resolve_threads(train.threads)):
        return _evaluate_run(run_dir, metric=metric, checkpoint=checkpoint, device=device,
                             overrides=overrides, progress=progress, out=out, numerics_mode=mode)


def _run_train_settings(run_dir: Path):
    """The run's train section (numerics, threads) from RUN/config.json, read before torch runs
    anything; the defaults when it cannot be read (`_prepare` then says what is wrong)."""
    try:
        return load_config_file(RunFolder(run_dir).config).train
    except (ConfigError, OSError, ValueError):
        return TrainConfig()


def _evaluate_run(run_dir: str | Path, *, metric: str, checkpoint: str, device: str,
                  overrides: Optional[list[str]], progress: bool,
                  out: Optional[str | Path] = None, numerics_mode: str = "native") -> dict[str, Any]:
    start = time.perf_counter()
    metrics = requested_metrics(metric)
    inputs = {m.inputs for m in metrics}
    ev = _prepare(Path(run_dir), checkpoint, device, overrides, metrics, out)
    # Fail on a missing evaluator before spending time on generation.
    segmenter = find_segmenter(ev.cfg, ev.device) if "segmentation" in inputs else None
    images_kept = _start_output(ev)
    extractor = (FeatureExtractor(ev.cfg.eval.fid_protocol, ev.device, ev.cfg.eval.batch_size,
                                  numerics_tag=cache_tag(numerics_mode, ev.cfg.train.threads))
                 if "features" in inputs else None)
    scores = _Scores(ev, extractor, segmenter, metrics)
    timings = {"generate_s": 0.0, "fid_s": 0.0, "segment_s": 0.0}
    generated = 0
    thumbnails = []
    loader = DataLoader(Subset(ev.val_set, range(ev.count)), batch_size=ev.cfg.eval.batch_size, shuffle=False,
                        num_workers=ev.cfg.data.num_workers)
    with tqdm(total=ev.count, desc="eval", unit="img", disable=not progress) as bar:
        for sample in loader:
            indices = [int(i) for i in sample["index"]] if "index" in sample else \
                list(range(bar.n, bar.n + sample["label"].shape[0]))
            fake, real, labels, new = _render_batch(ev, sample, indices, timings)
            generated += new
            scores.update(fake, real, labels, timings)
            thumbnails.append(F.adaptive_avg_pool2d(real.float() / 255, NEIGHBOUR_THUMBNAIL).numpy())
            bar.update(len(indices))
    scored = scores.finish(progress)
    dependence = label_dependence(ev)
    subset = eval_subset(ev, np.concatenate(thumbnails))
    return _record(ev, scores, scored, dependence, subset, metric=metric, checkpoint=checkpoint, timings=timings,
                   generated=generated, wall=time.perf_counter() - start, images_kept=images_kept,
                   numerics=numerics_state(ev.device, mode=numerics_mode))
