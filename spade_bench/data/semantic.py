"""The generator's and discriminator's semantic input, built batched on the label's device.

Channels, in order: one-hot classes (label_nc), the don't-care channel (index label_nc, when
contain_dontcare), and the instance edge map (when use_instance), as in the original
`preprocess_input`. The original crashes here with a CUDA scatter error on an out-of-range
label (SPADE issues #137, #68, #163, #166); this raises a DataError that says what to change.
"""
from __future__ import annotations

from typing import Optional

import torch

from spade_bench.config import DataConfig
from spade_bench.errors import DataError


def instance_edges(instance: torch.Tensor) -> torch.Tensor:
    """Bool [B, H, W]: a pixel whose instance id differs from its left, right, upper or lower neighbour.

    The original `get_edges`.
    """
    edges = torch.zeros_like(instance, dtype=torch.bool)
    horizontal = instance[..., :, 1:] != instance[..., :, :-1]
    vertical = instance[..., 1:, :] != instance[..., :-1, :]
    edges[..., :, 1:] |= horizontal
    edges[..., :, :-1] |= horizontal
    edges[..., 1:, :] |= vertical
    edges[..., :-1, :] |= vertical
    return edges


def _as_batch(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() == 4:
        if x.shape[1] != 1:
            raise ValueError(f"{name} must be [B, H, W] or [B, 1, H, W], got {tuple(x.shape)}")
        return x[:, 0]
    if x.dim() == 2:
        return x[None]
    if x.dim() != 3:
        raise ValueError(f"{name} must be [B, H, W] or [B, 1, H, W], got {tuple(x.shape)}")
    return x


def semantic_input(label: torch.Tensor, instance: Optional[torch.Tensor], data_cfg: DataConfig, *,
                   dtype: torch.dtype = torch.float32, check_range: bool = True) -> torch.Tensor:
    """Label map [B, H, W] (or [B, 1, H, W]) -> float [B, semantic_channels, H, W] on its device.

    check_range costs one device sync per batch. The trainer turns it off: its datasets have
    already range-checked every label file as it was read (naming the file).
    """
    label = _as_batch(label, "label").long()
    classes = data_cfg.label_nc + int(data_cfg.contain_dontcare)
    if check_range:
        low, high = (int(v) for v in torch.aminmax(label))
        if low < 0 or high >= classes:
            raise DataError(_range_message(low, high, data_cfg))
    batch, height, width = label.shape
    out = torch.zeros(batch, data_cfg.semantic_channels, height, width, dtype=dtype, device=label.device)
    out[:, :classes].scatter_(1, label[:, None], 1.0)
    if data_cfg.use_instance:
        if instance is None:
            raise DataError("data.use_instance is on but the batch has no instance maps; "
                            "set data.use_instance=false or use a dataset with instance maps")
        instance = _as_batch(instance, "instance")
        if instance.shape != label.shape:
            raise DataError(f"instance maps {tuple(instance.shape)} and labels {tuple(label.shape)} differ in size")
        out[:, classes] = instance_edges(instance.to(label.device)).to(dtype)
    return out


def _range_message(low: int, high: int, data_cfg: DataConfig) -> str:
    nc = data_cfg.label_nc
    if low >= 0 and high == nc and not data_cfg.contain_dontcare:
        return (f"label value {nc} (the don't-care index) in the batch, but data.contain_dontcare is false; "
                f"set data.contain_dontcare=true")
    value = high if high >= nc + int(data_cfg.contain_dontcare) else low
    dont_care = f", plus {nc} for don't-care" if data_cfg.contain_dontcare else ""
    return (f"label value {value} is outside 0..{nc - 1} (data.label_nc={nc}{dont_care}); "
            f"set data.label_nc (--label-nc) to cover it, or mark it as don't-care with "
            f"data.dont_care_value (--dont-care) and data.contain_dontcare=true")
