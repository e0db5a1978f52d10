"""Adversarial, feature-matching and KL losses with the original's semantics.

All of them accept bf16 or fp32 inputs and reduce in fp32.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spade_bench.errors import ConfigError
from spade_bench.names import GAN_MODES  # noqa: F401 - re-exported

Prediction = Union[Tensor, Sequence[Union[Tensor, Sequence[Tensor]]]]


class GANLoss(nn.Module):
    """GAN loss on a prediction map, or on a multiscale D output (averaged over scales).

    For a multiscale output (a list per scale of [features..., prediction]) only each
    scale's last tensor is scored, and the per-scale losses are averaged.

    - hinge: D real: mean(relu(1 - p)); D fake: mean(relu(1 + p)); G: -mean(p).
    - ls: mean((p - t)^2), t = 1 for real, 0 for fake (same for G and D).
    - original: BCE with logits against t (same for G and D).

    Args:
        mode: hinge, ls or original.
    """

    def __init__(self, mode: str = "hinge"):
        super().__init__()
        if mode not in GAN_MODES:
            raise ConfigError(f"unknown loss.gan_mode {mode!r}; use one of {', '.join(GAN_MODES)}")
        self.mode = mode

    def single(self, prediction: Tensor, target_is_real: bool, for_discriminator: bool) -> Tensor:
        """The loss on one prediction map."""
        p = prediction.float()
        if self.mode == "hinge":
            if for_discriminator:
                return F.relu(1 - p).mean() if target_is_real else F.relu(1 + p).mean()
            if not target_is_real:
                raise ValueError("the generator's hinge loss must aim for real (target_is_real=True)")
            return -p.mean()
        target = torch.full_like(p, 1.0 if target_is_real else 0.0)
        if self.mode == "ls":
            return F.mse_loss(p, target)
        return F.binary_cross_entropy_with_logits(p, target)

    def forward(self, prediction: Prediction, target_is_real: bool, for_discriminator: bool) -> Tensor:
        if isinstance(prediction, Tensor):
            return self.single(prediction, target_is_real, for_discriminator)
        losses = []
        for scale in prediction:
            final = scale if isinstance(scale, Tensor) else scale[-1]
            losses.append(self.single(final, target_is_real, for_discriminator))
        return torch.stack(losses).mean()


class FeatureMatchingLoss(nn.Module):
    """L1 between D's intermediate outputs on fake and on (detached) real, / num_D.

    Sums over scales and over every output but each scale's last (the prediction), then
    divides by the number of scales; the trainer multiplies by lambda_feat (10).
    """

    def forward(self, pred_fake: Sequence[Sequence[Tensor]], pred_real: Sequence[Sequence[Tensor]]) -> Tensor:
        num_scales = len(pred_fake)
        total = pred_fake[0][0].new_zeros((), dtype=torch.float32)
        for fake_scale, real_scale in zip(pred_fake, pred_real):
            for fake, real in zip(fake_scale[:-1], real_scale[:-1]):
                total = total + F.l1_loss(fake.float(), real.detach().float())
        return total / num_scales


class KLDLoss(nn.Module):
    """KL(N(mu, exp(logvar)) || N(0, I)) = -0.5 * sum(1 + logvar - mu^2 - exp(logvar)).

    Summed over the batch and all dimensions, as the original; weight lambda_kld = 0.05.
    """

    def forward(self, mu: Tensor, logvar: Tensor) -> Tensor:
        mu, logvar = mu.float(), logvar.float()
        return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
