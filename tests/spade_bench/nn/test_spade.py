"""SPADE layer: norms, nearest resizing once per resolution, modulation, fused path, wash-away."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spade_bench.errors import ConfigError
from spade_bench.nn import count_parameters
from spade_bench.nn.spade import SPADE, norm_factory, param_free_norm, resize_segmap


def one_hot(labels: torch.Tensor, channels: int) -> torch.Tensor:
    return F.one_hot(labels, channels).permute(0, 3, 1, 2).float()


def make_spade(**kwargs) -> SPADE:
    torch.manual_seed(0)
    options = dict(norm=param_free_norm("batch"), hidden=16, kernel_size=3)
    options.update(kwargs)
    layer = SPADE(8, 5, **options)
    # Non-trivial weights so that gamma and beta are far from zero.
    for conv in (layer.mlp_shared[0], layer.mlp_gamma, layer.mlp_beta):
        nn.init.normal_(conv.weight, 0, 0.3)
        nn.init.normal_(conv.bias, 0, 0.3)
    return layer


@pytest.mark.parametrize("kind,cls", [("syncbatch", nn.SyncBatchNorm), ("batch", nn.BatchNorm2d),
                                      ("instance", nn.InstanceNorm2d)])
def test_param_free_norms_have_no_parameters(kind, cls):
    layer = param_free_norm(kind)(6)
    assert isinstance(layer, cls)
    assert count_parameters(layer) == 0
    assert count_parameters(norm_factory(kind, affine=True)(6)) == 12


def test_syncbatch_runs_in_a_single_cpu_process_as_batch_norm():
    x = torch.randn(3, 4, 5, 5)
    sync, plain = param_free_norm("syncbatch")(4), param_free_norm("batch")(4)
    assert torch.allclose(sync(x), plain(x), atol=1e-6)
    assert torch.allclose(sync(x).mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-5)


def test_unknown_norm_and_modulation_are_config_errors():
    with pytest.raises(ConfigError, match="unknown normalisation"):
        param_free_norm("group")
    with pytest.raises(ConfigError, match="modulation"):
        SPADE(4, 3, norm=param_free_norm("batch"), modulation="beta")


def test_parameter_count_by_hand():
    layer = SPADE(4, 3, norm=param_free_norm("syncbatch"), hidden=5, kernel_size=3)
    # shared: 3*5*9 + 5; gamma and beta: 5*4*9 + 4 each.
    assert count_parameters(layer) == (3 * 5 * 9 + 5) + 2 * (5 * 4 * 9 + 4)
    assert layer.mlp_shared[0].kernel_size == (3, 3)
    k1 = SPADE(4, 3, norm=param_free_norm("batch"), hidden=5, kernel_size=1)
    assert count_parameters(k1) == (3 * 5 + 5) + 2 * (5 * 4 + 4)


def test_output_is_the_formula_and_segmap_is_nearest_resized():
    layer = make_spade()
    x = torch.randn(2, 8, 8, 8)
    segmap = one_hot(torch.randint(0, 5, (2, 32, 32)), 5)
    out = layer(x, segmap)
    nearest = F.interpolate(segmap, size=(8, 8), mode="nearest")
    # Nearest keeps a one-hot map one-hot; bilinear would not.
    assert torch.equal(nearest.sum(1), torch.ones(2, 8, 8))
    gamma, beta = layer.mlp_gamma(layer.mlp_shared(nearest)), layer.mlp_beta(layer.mlp_shared(nearest))
    expected = F.batch_norm(x, None, None, training=True) * (1 + gamma) + beta
    assert torch.allclose(out, expected, atol=1e-5)


def test_resize_segmap_uses_and_fills_the_cache():
    segmap = torch.rand(1, 3, 16, 16)
    cache: dict = {}
    small = resize_segmap(segmap, (4, 4), cache)
    assert cache[(4, 4)] is small
    assert resize_segmap(segmap, (4, 4), cache) is small
    assert resize_segmap(segmap, (16, 16), cache) is segmap
    assert torch.equal(small, segmap[:, :, ::4, ::4])


def test_gamma_modulation_differs_exactly_where_gamma_enters():
    one_plus = make_spade(modulation="one_plus_gamma")
    gamma_only = make_spade(modulation="gamma")
    gamma_only.load_state_dict(one_plus.state_dict(), strict=True)
    x = torch.randn(2, 8, 8, 8)
    segmap = one_hot(torch.randint(0, 5, (2, 8, 8)), 5)
    normalized = one_plus.param_free_norm(x)
    gamma, beta = one_plus.gamma_beta(segmap)
    out_one_plus, out_gamma = one_plus(x, segmap), gamma_only(x, segmap)
    assert torch.equal(out_one_plus, normalized * (1 + gamma) + beta)
    assert torch.equal(out_gamma, normalized * gamma + beta)
    assert torch.allclose(out_one_plus - out_gamma, normalized, atol=1e-5)
    # With gamma's convolution zeroed the difference is exact: (n + beta) versus beta.
    for layer in (one_plus, gamma_only):
        nn.init.zeros_(layer.mlp_gamma.weight)
        nn.init.zeros_(layer.mlp_gamma.bias)
    beta = one_plus.gamma_beta(segmap)[1]
    assert torch.equal(one_plus(x, segmap), normalized + beta)
    assert torch.equal(gamma_only(x, segmap), beta)


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_fused_modulation_matches_unfused(kernel_size):
    unfused = make_spade(kernel_size=kernel_size)
    fused = make_spade(kernel_size=kernel_size, fused=True)
    assert unfused.state_dict().keys() == fused.state_dict().keys()
    fused.load_state_dict(unfused.state_dict(), strict=True)
    x = torch.randn(2, 8, 8, 8, requires_grad=True)
    segmap = one_hot(torch.randint(0, 5, (2, 16, 16)), 5)
    out_unfused, out_fused = unfused(x, segmap), fused(x, segmap)
    assert torch.allclose(out_unfused, out_fused, atol=1e-5)
    out_unfused.square().sum().backward()
    out_fused.square().sum().backward()
    for (name, a), b in zip(unfused.named_parameters(), fused.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-4, rtol=1e-4), name


def test_uniform_maps_wash_away_under_conv_and_instance_norm_but_not_under_spade():
    """The paper's Fig. 3 argument: a uniform label map carries no information after
    conv + instance norm, whatever the class; SPADE keeps the class."""
    torch.manual_seed(0)
    classes, size = 5, 16
    map_a = one_hot(torch.full((1, size, size), 1), classes)
    map_b = one_hot(torch.full((1, size, size), 3), classes)
    conv_then_norm = nn.Sequential(nn.Conv2d(classes, 8, 3, padding=1, padding_mode="reflect"),
                                   nn.InstanceNorm2d(8))
    washed_a, washed_b = conv_then_norm(map_a), conv_then_norm(map_b)
    # Both are zero up to the float rounding of a constant's mean (amplified by 1/sqrt(eps)):
    # the class is gone. A non-uniform map gives outputs of order 1 through the same layers.
    assert washed_a.abs().max() < 1e-4 and washed_b.abs().max() < 1e-4
    assert torch.allclose(washed_a, washed_b, atol=1e-4)
    mixed = one_hot(torch.randint(0, classes, (1, size, size)), classes)
    assert conv_then_norm(mixed).abs().mean() > 0.5

    spade = make_spade(norm=param_free_norm("instance"))
    features = torch.randn(1, 8, size, size)
    out_a, out_b = spade(features, map_a), spade(features, map_b)
    assert (out_a - out_b).abs().mean() > 0.1
