"""Data: procedural outdoor scenes, real dataset formats, paired transforms, checks, palettes.

The contract API (docs/ARCHITECTURE.md, "Data"):
- `build_dataset(data_cfg, split, *, augment=None)` -> Dataset of sample dicts
  {"image": float32 [3, H, W] in [-1, 1], "label": int64 [H, W], "instance": int32 [H, W]
  (only with use_instance), "path": str, "index": int};
- `semantic_input(label, instance, data_cfg)` -> float [B, semantic_channels, H, W];
- `colorize(label, num_classes)` -> uint8 [.., 3, H, W]; `colorize_labels(label, data_cfg)` draws with
  the dataset's palette, the don't-care index in its own colour;
- `build_dataloader(dataset, batch_size, *, shuffle, sampler, num_workers, drop_last, seed)`;
- `check_dataset(data_cfg)` -> CheckReport; `load_label_file(path, data_cfg)` -> int64 [H, W];
- `CLASS_NAMES` (the synthetic classes) and `class_names(data_cfg)`.
"""
from spade_bench.data.check import CheckReport, check_dataset
from spade_bench.data.loader import (PairedDataset, PairError, SyntheticDataset, build_dataloader, build_dataset,
                                     class_names, load_label_file)
from spade_bench.data.palette import colorize, colorize_labels, dataset_palette, label_colormap
from spade_bench.data.semantic import instance_edges, semantic_input
from spade_bench.data.synthetic import CLASS_NAMES, SYNTHETIC_PALETTE, generate_scene

__all__ = [
    "CLASS_NAMES", "SYNTHETIC_PALETTE", "CheckReport", "PairError", "PairedDataset", "SyntheticDataset",
    "build_dataloader", "build_dataset", "check_dataset", "class_names", "colorize", "colorize_labels", "dataset_palette",
    "generate_scene", "instance_edges", "label_colormap", "load_label_file", "semantic_input",
]
