"""Losses: GAN (hinge / ls / original), feature matching, perceptual, KL; and the G-loss set."""
from __future__ import annotations

from torch import nn

from spade_bench.losses.gan import GANLoss, FeatureMatchingLoss, KLDLoss
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


__all__ = ["GANLoss", "FeatureMatchingLoss", "KLDLoss", "PerceptualLoss", "VGG19Features",
           "EfficientNetLite0Features", "PERCEPTUAL_BACKBONES", "build_generator_losses",
           "default_vgg19_weights_path", "load_effnet_lite0"]
