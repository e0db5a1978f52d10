"""GAN losses against hand-computed values; feature matching; KL; the generator-loss set."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spade_bench.config import resolve
from spade_bench.errors import ConfigError
from spade_bench.losses import FeatureMatchingLoss, GANLoss, KLDLoss, build_generator_losses

PRED = torch.tensor([-2.0, 0.5, 1.5, 3.0]).view(1, 1, 2, 2)
P = PRED.flatten().double().numpy()


@pytest.mark.parametrize("mode,target_is_real,for_discriminator,expected", [
    # hinge: D real mean(relu(1 - p)) = (3 + .5 + 0 + 0) / 4; D fake mean(relu(1 + p)) = (0 + 1.5 + 2.5 + 4) / 4
    ("hinge", True, True, 0.875),
    ("hinge", False, True, 2.0),
    ("hinge", True, False, -0.75),  # G: -mean(p)
    # ls: mean((p - 1)^2) = (9 + .25 + .25 + 4) / 4; mean(p^2) = (4 + .25 + 2.25 + 9) / 4
    ("ls", True, True, 3.375),
    ("ls", False, True, 3.875),
    ("ls", True, False, 3.375),
    # original: BCE with logits = mean(log(1 + exp(-p))) for real, mean(log(1 + exp(p))) for fake
    ("original", True, True, float(np.mean(np.log1p(np.exp(-P))))),
    ("original", False, True, float(np.mean(np.log1p(np.exp(P))))),
    ("original", True, False, float(np.mean(np.log1p(np.exp(-P))))),
])
def test_gan_loss_hand_values(mode, target_is_real, for_discriminator, expected):
    loss = GANLoss(mode)(PRED, target_is_real, for_discriminator=for_discriminator)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_multiscale_scores_only_each_last_output_and_averages_scales():
    features = torch.full((1, 4, 3, 3), 100.0)  # ignored: not a prediction
    second = torch.tensor([0.0, 2.0]).view(1, 1, 1, 2)  # hinge D real: (1 + 0) / 2 = 0.5
    loss = GANLoss("hinge")([[features, PRED], [features, second]], True, for_discriminator=True)
    assert loss.item() == pytest.approx((0.875 + 0.5) / 2)
    assert GANLoss("hinge")([PRED, second], True, True).item() == pytest.approx((0.875 + 0.5) / 2)


def test_generator_hinge_must_aim_for_real_and_modes_are_checked():
    with pytest.raises(ValueError, match="aim for real"):
        GANLoss("hinge")(PRED, False, for_discriminator=False)
    with pytest.raises(ConfigError, match="gan_mode"):
        GANLoss("wgan")


def test_bf16_predictions_are_scored_in_fp32():
    pred = torch.randn(2, 1, 8, 8)
    for mode in ("hinge", "ls", "original"):
        full = GANLoss(mode)(pred, True, True)
        half = GANLoss(mode)(pred.bfloat16(), True, True)
        assert half.dtype == torch.float32
        assert half.item() == pytest.approx(full.item(), rel=2e-2)


def test_feature_matching_by_hand_with_real_detached():
    fake = [[torch.zeros(1, 2, 2, 2, requires_grad=True), torch.zeros(1, 1, 2, 2)],
            [torch.zeros(1, 2, 1, 1, requires_grad=True), torch.ones(1, 3, 1, 1), torch.zeros(1, 1, 1, 1)]]
    real = [[torch.full((1, 2, 2, 2), 2.0, requires_grad=True), torch.full((1, 1, 2, 2), 50.0)],
            [torch.full((1, 2, 1, 1), -1.0), torch.full((1, 3, 1, 1), 4.0), torch.full((1, 1, 1, 1), 9.0)]]
    loss = FeatureMatchingLoss()(fake, real)
    # scale 0: |0 - 2| = 2 (prediction ignored); scale 1: |0 + 1| = 1 and |1 - 4| = 3; / num_D = 2.
    assert loss.item() == pytest.approx((2 + 1 + 3) / 2)
    loss.backward()
    assert real[0][0].grad is None and fake[0][0].grad is not None


def test_kld_matches_numpy_and_sums_over_the_batch():
    rng = np.random.default_rng(0)
    mu, logvar = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    expected = -0.5 * np.sum(1 + logvar - mu ** 2 - np.exp(logvar))
    got = KLDLoss()(torch.tensor(mu, dtype=torch.bfloat16), torch.tensor(logvar, dtype=torch.float32))
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(expected, rel=2e-2)
    assert KLDLoss()(torch.tensor(mu), torch.tensor(logvar)).item() == pytest.approx(expected, rel=1e-6)
    assert KLDLoss()(torch.zeros(4, 8), torch.zeros(4, 8)).item() == 0.0


def test_build_generator_losses_terms_and_weights():
    plain = build_generator_losses(resolve("spade", preset="smoke", overrides=["loss.perceptual=none"]))
    assert set(plain) == {"gan", "feat"}
    assert isinstance(plain["gan"][0], GANLoss) and plain["gan"][1] == 1.0 and plain["gan"][0].mode == "hinge"
    assert isinstance(plain["feat"][0], FeatureMatchingLoss) and plain["feat"][1] == 10.0
    vae = build_generator_losses(resolve("spade-vae", preset="smoke",
                                         overrides=["loss.perceptual=none", "loss.lambda_feat=0",
                                                    "loss.gan_mode=ls"]))
    assert set(vae) == {"gan", "kld"} and vae["kld"][1] == 0.05 and vae["gan"][0].mode == "ls"
    no_kld = build_generator_losses(resolve("spade-vae", preset="smoke",
                                            overrides=["loss.perceptual=none", "loss.lambda_kld=0"]))
    assert "kld" not in no_kld
    zero_weight = build_generator_losses(resolve("spade", preset="smoke",
                                                 overrides=["loss.lambda_perceptual=0"]))
    assert "perceptual" not in zero_weight
