"""The 1x1 convolutions of a frozen network through oneDNN on a CPU (the CPU fast path).

At one intra-op thread torch sends a 1x1, stride-1 convolution of a batch under 16 to its own
im2col + MKL path, one small matrix product per image (ATen's `use_mkldnn` heuristic; at two
threads the same convolution goes to oneDNN). On NHWC activations oneDNN runs it 1.5-5x faster
(measured at EfficientNet-Lite0's shapes at 64x64, one thread). The weights here are frozen (a
perceptual backbone), so backward needs the input's gradient only: for a 1x1 convolution that
is the 1x1 convolution of the output's gradient with the transposed weight, through oneDNN too.
The result differs from torch's path by rounding only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_CL = torch.channels_last


class _FrozenPointwise(torch.autograd.Function):
    """y = W x (+ b) per pixel, through oneDNN; gradient for x only (W and b are frozen)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias):
        ctx.save_for_backward(weight)
        return torch.mkldnn_convolution(x.contiguous(memory_format=_CL), weight, bias, (0, 0), (1, 1), (1, 1), 1)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (weight,) = ctx.saved_tensors
        transposed = weight.transpose(0, 1).contiguous(memory_format=_CL)
        grad_input = torch.mkldnn_convolution(grad.contiguous(memory_format=_CL), transposed, None,
                                              (0, 0), (1, 1), (1, 1), 1)
        return grad_input, None, None


class FrozenPointwiseConv(nn.Module):
    """A frozen 1x1 convolution that runs through oneDNN on float32 CPU tensors (elsewhere it is
    F.conv2d). Same parameters and state-dict keys as the nn.Conv2d it replaces.

    Args:
        conv: a 1x1, stride-1, unpadded, ungrouped nn.Conv2d whose weight needs no gradient.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if not is_frozen_pointwise(conv):
            raise ValueError(f"{conv} is not a frozen 1x1 stride-1 convolution")
        self.weight = conv.weight
        self.bias = conv.bias

    def forward(self, x: Tensor) -> Tensor:
        if self.weight.requires_grad or (self.bias is not None and self.bias.requires_grad):
            raise RuntimeError("FrozenPointwiseConv computes no weight gradient; its weights must stay frozen")
        if x.device.type == "cpu" and x.dtype == torch.float32 and torch.backends.mkldnn.is_available():
            return _FrozenPointwise.apply(x, self.weight, self.bias)
        return F.conv2d(x, self.weight, self.bias)


def is_frozen_pointwise(module: nn.Module) -> bool:
    return (type(module) is nn.Conv2d and module.kernel_size == (1, 1) and module.stride == (1, 1)
            and module.padding in ((0, 0), "valid") and module.dilation == (1, 1) and module.groups == 1
            and module.padding_mode == "zeros" and not module.weight.requires_grad
            and (module.bias is None or not module.bias.requires_grad))


def use_onednn_pointwise(network: nn.Module) -> int:
    """Replace every frozen 1x1 convolution in `network` by a `FrozenPointwiseConv`; returns how many."""
    count = 0
    for parent in list(network.modules()):
        for name, child in list(parent.named_children()):
            if is_frozen_pointwise(child):
                setattr(parent, name, FrozenPointwiseConv(child))
                count += 1
    return count
