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
from spade_bench.generators import COND_NORMS, GENERATORS, build_generator
from spade_bench.losses import GANLoss, build_generator_losses, generator_loss_values
from spade_bench.names import load
from spade_bench.nn.blocks import CondResnetBlock
from spade_bench.nn.norms import NORMS
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
    "clade": {"generator.cond_norm"},
    "spade-paper-adam": {"optim.beta2"},
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
    values = generator_loss_values(terms, pred_fake=pred_fake, pred_real=pred_real, fake=fake, real=real,
                                   mu=mu, logvar=logvar)
    assert set(values) == {"gan", "feat"} | ({"kld"} if cfg.generator.use_vae else set())
    total = sum(values.values())
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
    """The layout, conditioning layer and norm are the ones the config names (read from the
    tables GENERATORS, COND_NORMS and NORMS, not from a copy here)."""
    cfg = tiny_config(variant)
    g = cfg.generator
    generator = build_generator(cfg)
    layout = GENERATORS[g.arch]
    assert type(generator) is type(load(layout.build)(cfg))
    blocks = [m for m in generator.modules() if isinstance(m, CondResnetBlock)]
    assert bool(blocks) == layout.conditioned
    cond_layer = type(load(COND_NORMS[g.cond_norm])(cfg)(8))
    for block in blocks:
        for norm in (block.norm_0, block.norm_1):
            assert type(norm) is cond_layer
            assert type(norm.param_free_norm) is load(NORMS[g.param_free_norm])
    spades = [m for m in generator.modules() if isinstance(m, SPADE)]
    assert bool(spades) == (layout.conditioned and g.cond_norm == "spade")
    for spade in spades:
        assert spade.modulation == g.modulation
        assert spade.mlp_gamma.kernel_size == (g.spade_kernel,) * 2
    if layout.conditioned:
        assert isinstance(generator.fc, nn.Linear if g.use_vae else nn.Conv2d)


def test_ablations_set_what_their_names_promise():
    assert resolve("spade-gamma").generator.modulation == "gamma"
    assert resolve("spade-k1").generator.spade_kernel == 1
    assert resolve("spade-instancenorm").generator.param_free_norm == "instance"
    assert resolve("spade").generator.param_free_norm == "syncbatch"
    pix = resolve("pix2pixhd").generator
    assert (pix.arch, pix.pix2pixhd_norm, pix.pix2pixhd_downsamples, pix.pix2pixhd_blocks) == \
        ("pix2pixhd", "instance", 4, 9)
