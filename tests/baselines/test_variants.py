"""Every registered variant trains at a tiny size: G, D (and E) forward and backward, outputs
in [-1, 1], every parameter gets a gradient, the label map matters; and each variant's
network is what its file says."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spade_bench.config import experiment_diff, resolve
from spade_bench.discriminators import build_discriminator, discriminate
from spade_bench.encoders import build_encoder, reparameterize
from spade_bench.generators import ConcatGenerator, Pix2PixHDGenerator, SPADEGenerator, build_generator
from spade_bench.losses import GANLoss, build_generator_losses
from spade_bench.nn.spade import SPADE
from spade_bench.registry import list_variants

TINY = ["generator.ngf=8", "generator.spade_hidden=16", "discriminator.ndf=8", "encoder.ndf=8",
        "loss.perceptual=none"]

# What each variant changes relative to `spade` (besides its name).
EXPECTED_CHANGES = {
    "spade": set(),
    "spade-gamma": {"generator.modulation"},
    "spade-k1": {"generator.spade_kernel"},
    "spade-instancenorm": {"generator.param_free_norm"},
    "spade-vae": {"generator.use_vae"},
    "concat": {"generator.arch"},
    "pix2pixhd": {"generator.arch"},  # pix2pixhd_norm=instance is already the default
}


def tiny_config(variant):
    return resolve(variant, preset="smoke", overrides=TINY)


def segmap_from(labels, channels):
    return F.one_hot(labels, channels).permute(0, 3, 1, 2).float()


def assert_all_have_grads(module, what):
    for name, p in module.named_parameters():
        assert p.grad is not None, f"{what}: {name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{what}: {name} has a non-finite gradient"


@pytest.mark.parametrize("variant", list_variants())
def test_variant_trains_one_step(variant):
    torch.manual_seed(0)
    cfg = tiny_config(variant)
    generator, discriminator, encoder = build_generator(cfg), build_discriminator(cfg), build_encoder(cfg)
    assert (encoder is not None) == cfg.generator.use_vae
    for net in (generator, discriminator, encoder):
        if net is not None:
            net.train()
    channels = cfg.data.semantic_channels
    labels = torch.randint(0, channels, (2, 64, 64))
    segmap = segmap_from(labels, channels)
    real = torch.rand(2, 3, 64, 64) * 2 - 1

    # Generator step: G's (and E's) parameters get gradients from a G loss through D.
    terms = build_generator_losses(cfg)
    z, mu, logvar = None, None, None
    if encoder is not None:
        mu, logvar = encoder(real)
        z = reparameterize(mu, logvar)
    fake = generator(segmap, z)
    assert fake.shape == (2, 3, 64, 64)
    assert fake.min() >= -1 and fake.max() <= 1
    pred_fake, pred_real = discriminate(discriminator, segmap, fake, real)
    total = terms["gan"][1] * terms["gan"][0](pred_fake, True, for_discriminator=False)
    total = total + terms["feat"][1] * terms["feat"][0](pred_fake, pred_real)
    if "kld" in terms:
        total = total + terms["kld"][1] * terms["kld"][0](mu, logvar)
    assert torch.isfinite(total)
    total.backward()
    assert_all_have_grads(generator, "G")
    if encoder is not None:
        assert_all_have_grads(encoder, "E")

    # Discriminator step on detached fakes.
    discriminator.zero_grad(set_to_none=True)
    gan = GANLoss(cfg.loss.gan_mode)
    pred_fake, pred_real = discriminate(discriminator, segmap, fake.detach(), real)
    loss_d = gan(pred_fake, False, for_discriminator=True) + gan(pred_real, True, for_discriminator=True)
    loss_d.backward()
    assert_all_have_grads(discriminator, "D")

    # The label map matters (same z for the VAE).
    with torch.no_grad():
        other = segmap_from(torch.roll(labels, shifts=7, dims=2), channels)
        z_fixed = torch.randn(2, cfg.generator.z_dim) if cfg.generator.use_vae else None
        first, second = generator(segmap, z_fixed), generator(other, z_fixed)
    # Relative to the output's scale: spade-gamma starts with outputs ~1e-7, since every
    # layer multiplies by gamma ~ 0 at initialisation.
    assert first.abs().max() > 0
    assert (first - second).abs().max() > 1e-3 * first.abs().max()


@pytest.mark.parametrize("variant", list_variants())
def test_variant_changes_only_what_it_says(variant):
    diff = set(experiment_diff(resolve(variant), resolve("spade"))) - {"variant"}
    if variant in EXPECTED_CHANGES:
        assert diff == EXPECTED_CHANGES[variant]
    else:
        assert diff, f"{variant} changes nothing relative to spade"


@pytest.mark.parametrize("variant", list_variants())
def test_variant_builds_the_network_it_names(variant):
    cfg = tiny_config(variant)
    generator = build_generator(cfg)
    spades = [m for m in generator.modules() if isinstance(m, SPADE)]
    arch = cfg.generator.arch
    expected_class = {"spade": SPADEGenerator, "concat": ConcatGenerator, "pix2pixhd": Pix2PixHDGenerator}[arch]
    assert type(generator) is expected_class
    if arch != "spade":
        assert not spades
        return
    assert spades
    for spade in spades:
        assert spade.modulation == cfg.generator.modulation
        assert spade.mlp_gamma.kernel_size == (cfg.generator.spade_kernel,) * 2
        norm_class = {"instance": nn.InstanceNorm2d, "batch": nn.BatchNorm2d,
                      "syncbatch": nn.SyncBatchNorm}[cfg.generator.param_free_norm]
        assert type(spade.param_free_norm) is norm_class
    assert isinstance(generator.fc, nn.Linear if cfg.generator.use_vae else nn.Conv2d)


def test_ablations_set_what_their_names_promise():
    assert resolve("spade-gamma").generator.modulation == "gamma"
    assert resolve("spade-k1").generator.spade_kernel == 1
    assert resolve("spade-instancenorm").generator.param_free_norm == "instance"
    assert resolve("spade").generator.param_free_norm == "syncbatch"
    pix = resolve("pix2pixhd").generator
    assert (pix.arch, pix.pix2pixhd_norm, pix.pix2pixhd_downsamples, pix.pix2pixhd_blocks) == \
        ("pix2pixhd", "instance", 4, 9)
