"""semantic_input: one-hot, don't-care channel and instance edges against small NumPy references."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from spade_bench.config import DataConfig
from spade_bench.data import instance_edges, semantic_input
from spade_bench.errors import DataError


def numpy_edges(instance: np.ndarray) -> np.ndarray:
    """The original get_edges, pixel by pixel."""
    batch, height, width = instance.shape
    edges = np.zeros_like(instance, dtype=bool)
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < height and 0 <= nx < width and instance[b, y, x] != instance[b, ny, nx]:
                        edges[b, y, x] = True
    return edges


def test_one_hot_matches_numpy(device):
    cfg = DataConfig(label_nc=5)
    label = np.random.default_rng(0).integers(0, 5, (2, 6, 7))
    out = semantic_input(torch.from_numpy(label).to(device), None, cfg)
    assert out.shape == (2, 5, 6, 7) and out.dtype == torch.float32 and out.device.type == device.type
    expected = (label[:, None] == np.arange(5)[None, :, None, None]).astype(np.float32)
    assert np.array_equal(out.cpu().numpy(), expected)


def test_dont_care_and_instance_channels(device):
    cfg = DataConfig(label_nc=4, contain_dontcare=True, use_instance=True)
    rng = np.random.default_rng(1)
    label = rng.integers(0, 5, (3, 8, 9))                    # 4 = don't-care
    instance = rng.integers(0, 3, (3, 8, 9)).astype(np.int32) * 1000
    out = semantic_input(torch.from_numpy(label).to(device), torch.from_numpy(instance).to(device), cfg).cpu().numpy()
    assert out.shape == (3, cfg.semantic_channels, 8, 9) == (3, 6, 8, 9)
    assert np.array_equal(out[:, 4], (label == 4).astype(np.float32))
    assert np.array_equal(out[:, :4].sum(1) + out[:, 4], np.ones((3, 8, 9)))
    assert np.array_equal(out[:, 5], numpy_edges(instance).astype(np.float32))


def test_instance_edges_reference_and_shapes():
    instance = np.random.default_rng(2).integers(0, 2, (2, 5, 6)).astype(np.int32)
    assert np.array_equal(instance_edges(torch.from_numpy(instance)).numpy(), numpy_edges(instance))
    uniform = torch.full((1, 4, 4), 7, dtype=torch.int32)
    assert not instance_edges(uniform).any()


def test_accepts_channel_dim_and_dtype():
    cfg = DataConfig(label_nc=3)
    label = torch.tensor([[[0, 1], [2, 0]]])
    a = semantic_input(label, None, cfg)
    b = semantic_input(label[:, None], None, cfg, dtype=torch.bfloat16)
    assert b.dtype == torch.bfloat16 and torch.equal(a, b.float())


@pytest.mark.parametrize("bad", [7, -1])
def test_out_of_range_value_names_the_value(bad):
    cfg = DataConfig(label_nc=5)
    label = torch.zeros(1, 4, 4, dtype=torch.long)
    label[0, 2, 2] = bad
    with pytest.raises(DataError, match=rf"label value {bad}\b.*label_nc"):
        semantic_input(label, None, cfg)


def test_dont_care_index_without_its_channel():
    cfg = DataConfig(label_nc=5, contain_dontcare=False)
    label = torch.full((1, 2, 2), 5)
    with pytest.raises(DataError, match="contain_dontcare"):
        semantic_input(label, None, cfg)
    # With the channel, the same value is fine.
    out = semantic_input(label, None, replace(cfg, contain_dontcare=True))
    assert out[:, 5].all()


def test_missing_instance_maps():
    cfg = DataConfig(label_nc=3, use_instance=True)
    with pytest.raises(DataError, match="instance"):
        semantic_input(torch.zeros(1, 2, 2, dtype=torch.long), None, cfg)
