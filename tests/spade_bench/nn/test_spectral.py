"""Spectral norm in the original's order: the same numbers as torch.nn.utils.spectral_norm."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as parametrizations_spectral_norm

from spade_bench.nn.spectral import spectral_norm


def _pair(make, seed=0):
    """(ours, the original's hook-based spectral norm) wrapping identical weights, u and v."""
    torch.manual_seed(seed)
    ours = spectral_norm(make())
    reference = torch.nn.utils.spectral_norm(make())
    with torch.no_grad():
        reference.weight_orig.copy_(ours.parametrizations.weight.original)
        reference.weight_u.copy_(ours.parametrizations.weight[0]._u)
        reference.weight_v.copy_(ours.parametrizations.weight[0]._v)
        if ours.bias is not None:
            reference.bias.copy_(ours.bias)
    return ours, reference


@pytest.mark.parametrize("make", [lambda: nn.Conv2d(6, 5, 3), lambda: nn.ConvTranspose2d(6, 4, 3),
                                  lambda: nn.Linear(7, 3)])
def test_training_forwards_match_the_original_hook_exactly(make):
    ours, reference = _pair(make)
    x = torch.randn(2, 6, 5, 5) if not isinstance(ours, nn.Linear) else torch.randn(2, 7)
    for _ in range(3):  # u and v carry over from one forward to the next
        assert torch.equal(ours(x), reference(x))
    sn = ours.parametrizations.weight[0]
    assert torch.equal(sn._u, reference.weight_u) and torch.equal(sn._v, reference.weight_v)
    ours.eval(), reference.eval()
    assert torch.equal(ours(x), reference(x))


def test_parametrizations_order_differs_in_training_mode():
    """The defect: torch's parametrization updates u before v, so one training forward differs."""
    torch.manual_seed(0)
    ours = spectral_norm(nn.Conv2d(6, 5, 3))
    theirs = parametrizations_spectral_norm(nn.Conv2d(6, 5, 3))
    theirs.load_state_dict(ours.state_dict())  # same keys, same u and v
    x = torch.randn(2, 6, 5, 5)
    assert not torch.equal(ours(x), theirs(x))


def test_keys_parameters_and_gradients():
    conv = spectral_norm(nn.Conv2d(4, 3, 3))
    assert parametrize.is_parametrized(conv, "weight")
    assert sorted(conv.state_dict()) == sorted(parametrizations_spectral_norm(nn.Conv2d(4, 3, 3)).state_dict())
    assert [n for n, _ in conv.named_parameters()] == ["bias", "parametrizations.weight.original"]
    conv(torch.randn(1, 4, 6, 6)).sum().backward()
    conv(torch.randn(1, 4, 6, 6)).sum().backward()  # the in-place u/v update spares the saved tensors
    assert conv.parametrizations.weight.original.grad is not None
    ema = copy.deepcopy(conv)
    assert torch.equal(ema.parametrizations.weight[0]._u, conv.parametrizations.weight[0]._u)
