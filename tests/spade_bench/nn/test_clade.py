"""CLADE layer: per-class gamma/beta lookup (authors' ClassAffine), instance-edge channel,
parameter and conv-FLOP overhead in the generator against SPADE and the bare decoder."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from spade_bench.config import resolve
from spade_bench.generators import build_generator
from spade_bench.nn import count_parameters
from spade_bench.nn.blocks import CondResnetBlock
from spade_bench.nn.clade import CLADE, make_clade
from spade_bench.nn.norms import param_free_norm
from spade_bench.nn.spade import SPADE


def one_hot(labels: torch.Tensor, channels: int) -> torch.Tensor:
    return F.one_hot(labels, channels).permute(0, 3, 1, 2).float()


def test_output_is_norm_times_class_gamma_plus_class_beta():
    torch.manual_seed(0)
    layer = CLADE(4, 5, norm=param_free_norm("batch"))
    nn.init.normal_(layer.class_specified_affine.bias)
    gamma, beta = layer.class_specified_affine.weight, layer.class_specified_affine.bias
    assert gamma.shape == beta.shape == (5, 4) and gamma.min() >= 0 and gamma.max() < 1  # uniform init
    labels = torch.randint(0, 5, (2, 16, 16))
    x = torch.randn(2, 4, 8, 8)
    out = layer(x, one_hot(labels, 5))
    small = labels[:, ::2, ::2]  # nearest resize to 8x8
    expected = (F.batch_norm(x, None, None, training=True) * gamma[small].permute(0, 3, 1, 2)
                + beta[small].permute(0, 3, 1, 2))
    assert torch.allclose(out, expected, atol=1e-5)
    assert count_parameters(layer) == 2 * 5 * 4  # the two tables, no conv


def test_uniform_maps_keep_their_class():
    torch.manual_seed(0)
    layer = CLADE(4, 3, norm=param_free_norm("instance"))
    x = torch.randn(1, 4, 8, 8)
    outs = [layer(x, one_hot(torch.full((1, 8, 8), c), 3)) for c in range(3)]
    assert (outs[0] - outs[1]).abs().mean() > 0.05 and (outs[1] - outs[2]).abs().mean() > 0.05


def test_instance_edges_add_one_channel_that_the_block_reads():
    torch.manual_seed(0)
    make = make_clade(3, norm=param_free_norm("batch"), instance_edges=True)
    layer = make(4)
    assert set(dict(layer.named_parameters())) == {"class_specified_affine.weight", "class_specified_affine.bias",
                                                   "inst_conv.weight", "inst_conv.bias"}
    segmap = torch.cat([one_hot(torch.randint(0, 3, (2, 8, 8)), 3), torch.rand(2, 1, 8, 8).round()], dim=1)
    out = layer(torch.randn(2, 4, 8, 8), segmap)
    assert out.shape == (2, 5, 8, 8)
    assert torch.allclose(out[:, -1:], layer.inst_conv(segmap[:, -1:]))
    block = CondResnetBlock(6, 4, cond_norm=make, spectral_norm=False)
    assert (block.conv_0.in_channels, block.conv_1.in_channels, block.conv_s.in_channels) == (7, 5, 7)
    assert block(torch.randn(2, 6, 8, 8), segmap).shape == (2, 4, 8, 8)


def test_generator_overhead_over_the_bare_decoder():
    """CLADE adds 2 x classes x channels per layer and no convolution; SPADE adds its MLPs."""
    def build(cond_norm):
        cfg = resolve("spade", preset="smoke", overrides=["generator.ngf=8", "generator.spade_hidden=16",
                                                          "data.crop_size=32", "data.load_size=32",
                                                          f"generator.cond_norm={cond_norm}"])
        torch.manual_seed(0)
        generator = build_generator(cfg).eval()
        with FlopCounterMode(display=False) as counter:
            generator(one_hot(torch.randint(0, 10, (1, 32, 32)), 10))
        return generator, count_parameters(generator), counter.get_total_flops()

    bare, bare_params, bare_flops = build("none")
    clade, clade_params, clade_flops = build("clade")
    spade, spade_params, spade_flops = build("spade")
    layers = [m for m in clade.modules() if isinstance(m, CLADE)]
    assert len(layers) == len([m for m in spade.modules() if isinstance(m, SPADE)]) == 7 * 2 + 4  # 7 blocks, 4 with a learned shortcut
    channels = sum(layer.param_free_norm.num_features for layer in layers)
    assert clade_params - bare_params == 2 * 10 * channels
    assert clade_flops == bare_flops  # lookups and elementwise products: no conv or matmul
    mlp_params = sum(count_parameters(m) for m in spade.modules() if isinstance(m, SPADE))
    assert spade_params - bare_params == mlp_params
    assert spade_flops > 2 * bare_flops


def test_class_map_is_computed_once_per_resolution_and_outputs_are_unchanged(monkeypatch):
    """The generator's per-forward cache holds each resolution's class map next to its resized
    segmap; the output is bit for bit the one where every layer runs its own argmax."""
    import spade_bench.nn.clade as clade_module

    cfg = resolve("clade", preset="smoke", overrides=["generator.ngf=8", "data.crop_size=32",
                                                      "data.load_size=32", "data.use_instance=true"])
    torch.manual_seed(0)
    generator = build_generator(cfg).train()
    twin = copy.deepcopy(generator)  # training-mode forwards update spectral norm's vectors
    classes = cfg.data.semantic_channels - 1  # the last channel: instance edges
    segmap = torch.cat([one_hot(torch.randint(0, classes, (2, 32, 32)), classes),
                        torch.rand(2, 1, 32, 32).round()], dim=1)
    layers = [m for m in generator.modules() if isinstance(m, CLADE)]
    assert layers and layers[0].instance_edges
    sizes = set()
    hooks = [m.register_forward_hook(lambda m, args, out: sizes.add(tuple(args[0].shape[-2:]))) for m in layers]
    calls = []
    argmax = torch.Tensor.argmax
    monkeypatch.setattr(torch.Tensor, "argmax", lambda self, *a, **k: calls.append(1) or argmax(self, *a, **k))
    torch.manual_seed(1)
    cached = generator(segmap)
    assert len(calls) == len(sizes) < len(layers)
    for hook in hooks:
        hook.remove()

    uncached = clade_module.class_map
    monkeypatch.setattr(clade_module, "class_map",
                        lambda segmap, n, size, cache=None: uncached(segmap, n, size, None))
    calls.clear()
    torch.manual_seed(1)
    assert torch.equal(twin(segmap), cached)
    assert len(calls) == len(layers)


def test_layers_sharing_a_cache_share_the_class_map():
    torch.manual_seed(0)
    first, second = CLADE(4, 5, norm=param_free_norm("batch")), CLADE(6, 5, norm=param_free_norm("batch"))
    segmap = one_hot(torch.randint(0, 5, (2, 16, 16)), 5)
    x, y = torch.randn(2, 4, 8, 8), torch.randn(2, 6, 8, 8)
    cache = {}
    outs = first(x, segmap, cache), second(y, segmap, cache)
    assert sorted(map(str, cache)) == ["('classes', 5, 8, 8)", "(8, 8)"]
    assert torch.equal(outs[0], first(x, segmap)) and torch.equal(outs[1], second(y, segmap))
