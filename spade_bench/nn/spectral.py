"""Spectral normalisation with the original SPADE code's power iteration.

The original wraps its convolutions in `torch.nn.utils.spectral_norm` (a forward
pre-hook). In training mode each forward runs one power-iteration step from the stored
vectors, v first, then u:

    v = normalize(W^T u);  u = normalize(W v);  sigma = u . W v;  W_sn = W / sigma

`torch.nn.utils.parametrizations.spectral_norm` updates u first, then v, so from the same
stored u and v it normalises differently in every training-mode forward (SPADE issue
notes in ../shared/fixtures/nvlabs-spade/README.md: about 4e-4 on the generator's output).
Eval mode uses the stored u and v in both and agrees exactly.

`spectral_norm(module)` registers `SpectralNorm` as a parametrization, so a wrapped
module looks like one wrapped by `torch.nn.utils.parametrizations.spectral_norm`:
`parametrize.is_parametrized(module, "weight")`, the weight's `original` is the only
parameter, and u and v are buffers. State-dict keys are the same too
(`<name>.parametrizations.weight.original`, `....weight.0._u`, `....weight.0._v`), so
checkpoints written before this module existed still load. The original code's keys
(`weight_orig`, `weight_u`, `weight_v`) are mapped in `spade_bench.nvlabs`.

Like the original, u and v start as normalised Gaussian draws with no warm-up
iterations (the parametrizations version runs 15 at registration, on a weight that
`init_weights` then replaces).

`torch.nn.utils.spectral_norm` itself is not used: its docstring marks it for
deprecation in favour of the parametrization, and its hook-based `weight` attribute
would change every state-dict key of every run.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


class SpectralNorm(nn.Module):
    """W -> W / sigma(W), sigma from one power-iteration step per training forward.

    Args:
        weight: the weight being wrapped (its shape sizes u and v).
        dim: the output dimension (1 for transposed convolutions, else 0).
        n_power_iterations: steps per training-mode forward (1 in the original).
        eps: added to norms, as in the original.
    """

    def __init__(self, weight: Tensor, *, dim: int = 0, n_power_iterations: int = 1, eps: float = 1e-12):
        super().__init__()
        if n_power_iterations < 1:
            raise ValueError(f"n_power_iterations must be >= 1, got {n_power_iterations}")
        self.dim = dim
        self.n_power_iterations = n_power_iterations
        self.eps = eps
        with torch.no_grad():
            h, w = self._matrix(weight).shape
            # The original's draw order: u (output side), then v.
            u = F.normalize(weight.new_empty(h).normal_(0, 1), dim=0, eps=eps)
            v = F.normalize(weight.new_empty(w).normal_(0, 1), dim=0, eps=eps)
        self.register_buffer("_u", u)
        self.register_buffer("_v", v)

    def _matrix(self, weight: Tensor) -> Tensor:
        if self.dim != 0:
            weight = weight.movedim(self.dim, 0)
        return weight.flatten(1)

    def forward(self, weight: Tensor) -> Tensor:
        matrix = self._matrix(weight)
        if self.training:
            with torch.no_grad():
                for _ in range(self.n_power_iterations):
                    # In place, so the buffers carry the estimate to the next forward (and
                    # DataParallel replicas share it), as in the original.
                    self._v.copy_(F.normalize(torch.mv(matrix.t(), self._u), dim=0, eps=self.eps))
                    self._u.copy_(F.normalize(torch.mv(matrix, self._v), dim=0, eps=self.eps))
        # Clones so that the in-place update of the next forward cannot touch what
        # autograd saved for this one's backward.
        u = self._u.clone(memory_format=torch.contiguous_format)
        v = self._v.clone(memory_format=torch.contiguous_format)
        sigma = torch.dot(u, torch.mv(matrix, v))
        return weight / sigma

    def right_inverse(self, value: Tensor) -> Tensor:
        # Assigning `module.weight = W` stores W as the raw weight, as the parametrizations
        # version does; u and v are left as they are.
        return value


def spectral_norm(module: nn.Module, name: str = "weight", n_power_iterations: int = 1,
                  eps: float = 1e-12) -> nn.Module:
    """Wrap `module.<name>` in spectral normalisation with the original's power iteration.

    Returns `module`, as `torch.nn.utils.parametrizations.spectral_norm` does.
    """
    weight = getattr(module, name, None)
    if not isinstance(weight, Tensor):
        raise ValueError(f"module {module} has no parameter or buffer named {name!r}")
    dim = 1 if isinstance(module, _TRANSPOSED) else 0
    parametrize.register_parametrization(
        module, name, SpectralNorm(weight, dim=dim, n_power_iterations=n_power_iterations, eps=eps))
    return module


__all__ = ["SpectralNorm", "spectral_norm"]
