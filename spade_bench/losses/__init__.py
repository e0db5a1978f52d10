"""Losses: GAN (hinge / ls / original), feature matching, perceptual, KL; and the G-loss set."""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from spade_bench.errors import ConfigError
from spade_bench.losses.gan import GAN_MODES, GANLoss, FeatureMatchingLoss, KLDLoss
from spade_bench.losses.perceptual import (PERCEPTUAL_BACKBONES, EfficientNetLite0Features, PerceptualLoss,
                                           VGG19Features, default_vgg19_weights_path, load_effnet_lite0)


def build_generator_losses(cfg) -> dict[str, tuple[nn.Module, float]]:
    """The generator's loss terms for `cfg` (a RunConfig): {name: (module, weight)}.

    - gan: GANLoss(loss.gan_mode), weight 1; call (pred_fake, True, for_discriminator=False).
    - feat: FeatureMatchingLoss, weight loss.lambda_feat; call (pred_fake, pred_real).
    - perceptual: PerceptualLoss(loss.perceptual), weight loss.lambda_perceptual; call (fake, real).
    - kld: KLDLoss, weight loss.lambda_kld, only with generator.use_vae; call (mu, logvar).

    A term whose weight is 0, or that does not apply, is absent.
    """
    loss = cfg.loss
    terms: dict[str, tuple[nn.Module, float]] = {"gan": (GANLoss(loss.gan_mode), 1.0)}
    if loss.lambda_feat:
        terms["feat"] = (FeatureMatchingLoss(), float(loss.lambda_feat))
    if loss.perceptual != "none" and loss.lambda_perceptual:
        terms["perceptual"] = (PerceptualLoss(loss.perceptual, weights_path=loss.vgg_weights),
                               float(loss.lambda_perceptual))
    if cfg.generator.use_vae and loss.lambda_kld:
        terms["kld"] = (KLDLoss(), float(loss.lambda_kld))
    return terms


def generator_loss_values(terms: dict[str, tuple[nn.Module, float]], *, pred_fake, pred_real, fake: Tensor,
                          real: Tensor, mu: Optional[Tensor] = None, logvar: Optional[Tensor] = None
                          ) -> dict[str, Tensor]:
    """Each term of `build_generator_losses` evaluated and weighted: {name: weight * loss}, fp32.

    The one place that knows which inputs each named term takes. The caller's autocast
    applies to every term; the GAN, feature-matching and KL terms compute in fp32 anyway.
    """
    inputs = {
        "gan": lambda loss: loss(pred_fake, True, for_discriminator=False),
        "feat": lambda loss: loss(pred_fake, pred_real),
        "perceptual": lambda loss: loss(fake, real),
        "kld": lambda loss: loss(mu, logvar),
    }
    values = {}
    for name, (module, weight) in terms.items():
        if name not in inputs:
            raise ConfigError(f"unknown generator loss term {name!r}; known: {', '.join(inputs)}")
        values[name] = inputs[name](module).float() * weight
    return values


__all__ = ["GANLoss", "GAN_MODES", "generator_loss_values", "FeatureMatchingLoss", "KLDLoss", "PerceptualLoss", "VGG19Features",
           "EfficientNetLite0Features", "PERCEPTUAL_BACKBONES", "build_generator_losses",
           "default_vgg19_weights_path", "load_effnet_lite0"]
