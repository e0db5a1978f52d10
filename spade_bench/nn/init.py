"""Weight initialisation as the original's `BaseNetwork.init_weights('xavier', 0.02)`.

The original applies it to G, D and E: xavier_normal_ with gain 0.02 on conv and linear
weights, zero biases, BatchNorm weights ~ N(1, 0.02). Instance norm is left alone (its
class name matched neither rule there). Under spectral norm the original's init wrote
into `weight_orig` (they share storage before the first forward); here that is the
parametrization's `original` tensor.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
             nn.ConvTranspose3d, nn.Linear)


def _raw_weight(module: nn.Module) -> torch.Tensor:
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


@torch.no_grad()
def init_weights(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """Initialise every conv, linear and batch-norm layer inside `module`; returns it."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.weight is not None:
                nn.init.normal_(m.weight, 1.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _WEIGHTED):
            nn.init.xavier_normal_(_raw_weight(m), gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module
