"""Label mappings between a dataset's label ids and the classes a segmenter is scored on.

Cityscapes label files (`*_gtFine_labelIds.png`) hold 35 ids (0..33, and the licence plate's
34 slot SPADE reserves with label_nc 35). Segmenters trained on Cityscapes, the paper's
DRN-D-105 among them, predict the 19 evaluation classes ("trainIds"); every other id is
ignored (255) in the official benchmark. Scoring a 19-class segmenter against 35-id labels,
or counting the ignored ids, changes mIoU and pixel accuracy by many points: one of the
protocol choices behind the disagreeing re-scorings of the released SPADE weights
(README, "Released weights").

`eval.label_mapping` names the mapping ("cityscapes-35-to-19"); it is recorded in
metrics.json under protocol.label_mapping.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from spade_bench.errors import ConfigError

IGNORE = 255

# cityscapesScripts, helpers/labels.py: id -> trainId for the 19 evaluated classes.
CITYSCAPES_ID_TO_TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                             24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_19_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                         "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
                         "bus", "train", "motorcycle", "bicycle")


@dataclass(frozen=True)
class LabelMapping:
    """Source label ids -> scored classes; ids without a class map to IGNORE.

    Args:
        name: what eval.label_mapping and metrics.json call it.
        source_classes: label ids the dataset's label maps hold (label_nc).
        class_names: the scored classes, in order of their new ids.
        table: {source id: new id}.
    """

    name: str
    source_classes: int
    class_names: tuple[str, ...]
    table: dict[int, int]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def lookup(self, device: Optional[torch.device] = None) -> Tensor:
        """int64 [source_classes]: new id per source id (IGNORE where none)."""
        out = torch.full((self.source_classes,), IGNORE, dtype=torch.long, device=device)
        for source, target in self.table.items():
            out[source] = target
        return out

    def apply(self, labels: Tensor) -> Tensor:
        """Source ids (any integer shape) -> new ids; ids outside 0..source_classes-1 become IGNORE."""
        labels = labels.long()
        table = self.lookup(labels.device)
        inside = (labels >= 0) & (labels < self.source_classes)
        mapped = table[labels.clamp(0, self.source_classes - 1)]
        return torch.where(inside, mapped, torch.full_like(mapped, IGNORE))


LABEL_MAPPINGS: dict[str, LabelMapping] = {
    "cityscapes-35-to-19": LabelMapping("cityscapes-35-to-19", 35, CITYSCAPES_19_CLASSES, CITYSCAPES_ID_TO_TRAIN_ID),
}


def get_label_mapping(name: Optional[str], label_nc: Optional[int] = None) -> Optional[LabelMapping]:
    """The mapping `name` (None: no mapping). With label_nc, checks the dataset's ids fit it."""
    if name is None:
        return None
    if name not in LABEL_MAPPINGS:
        raise ConfigError(f"eval.label_mapping={name!r} is unknown; use one of {', '.join(LABEL_MAPPINGS)} "
                          f"or leave it unset")
    mapping = LABEL_MAPPINGS[name]
    if label_nc is not None and label_nc != mapping.source_classes:
        raise ConfigError(f"eval.label_mapping={name} maps {mapping.source_classes} label ids, but "
                          f"data.label_nc is {label_nc}; use it with --dataset cityscapes, or unset it")
    return mapping


__all__ = ["IGNORE", "CITYSCAPES_ID_TO_TRAIN_ID", "CITYSCAPES_19_CLASSES", "LabelMapping", "LABEL_MAPPINGS",
           "get_label_mapping"]
