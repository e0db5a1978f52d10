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
- `CLASS_NAMES` (the synthetic classes) and `class_names(data_cfg)`;
- `formats.FORMATS`: the dataset-format table, one file per format in data/formats/.

The names above are imported from their modules on first use (PEP 562), so that importing the
package, and with it the torch-free format table that config validation reads, loads neither
torch nor numpy.
"""
from __future__ import annotations

import importlib
from typing import Any

# Public name -> the module of this package that defines it.
_EXPORTS = {
    "CheckReport": "check", "check_dataset": "check",
    "PairError": "loader", "PairedDataset": "loader", "SyntheticDataset": "loader", "build_dataloader": "loader",
    "build_dataset": "loader", "class_names": "loader", "load_label_file": "loader",
    "class_legend": "loader", "dont_care_name": "loader", "sample_source": "loader",
    "colorize": "palette", "colorize_labels": "palette", "dataset_palette": "palette", "label_colormap": "palette",
    "instance_edges": "semantic", "semantic_input": "semantic",
    "CLASS_NAMES": "synthetic", "SYNTHETIC_PALETTE": "synthetic", "generate_scene": "synthetic",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = sorted(_EXPORTS)
