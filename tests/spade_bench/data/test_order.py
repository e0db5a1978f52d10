"""Training batch order: per-sample seeded augmentation, and a position that resumes mid-epoch."""
from __future__ import annotations

import random

import pytest
import torch
from torch.utils.data import Dataset

from spade_bench.data.order import TrainBatches
from spade_bench.distributed import DistInfo
from spade_bench.errors import ConfigError


class Draws(Dataset):
    """Each sample: its index and a draw from every global RNG (what an augmentation does)."""

    def __len__(self) -> int:
        return 7

    def __getitem__(self, index: int):
        return {"index": index, "draw": torch.rand(()) + random.random()}


def take(batches: TrainBatches, n: int):
    out = []
    for batch in batches:
        out.append((batch["index"].tolist(), batch["draw"].tolist(), batches.position))
        if len(out) == n:
            return out


def test_positions_and_a_resumed_stream_match_a_straight_one():
    straight = take(TrainBatches(Draws(), 2, seed=3, info=DistInfo()), 8)
    # 7 samples, batches of 2, drop_last: 3 batches an epoch.
    assert [pos for _, _, pos in straight] == [(0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
    assert [ids for ids, _, _ in straight[:3]] != [ids for ids, _, _ in straight[3:6]]   # reshuffled per epoch
    torch.manual_seed(123)   # global RNG state must not matter
    random.seed(123)
    resumed = TrainBatches(Draws(), 2, seed=3, info=DistInfo())
    resumed.resume_at(straight[3][2])
    assert take(resumed, 4) == straight[4:]


def test_fewer_samples_than_a_batch_is_a_config_error():
    with pytest.raises(ConfigError, match=r"fewer than one batch of 8 .*lower train\.batch_size"):
        TrainBatches(Draws(), 8, seed=0, info=DistInfo())
