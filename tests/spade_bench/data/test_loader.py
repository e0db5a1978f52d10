"""build_dataset / build_dataloader: picklable datasets, seeded loaders, workers, config checks."""
from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch

from spade_bench.config import DataConfig
from spade_bench.data import build_dataloader, build_dataset
from spade_bench.data.loader import seed_worker
from spade_bench.errors import ConfigError

SMALL = replace(DataConfig(), load_size=40, crop_size=32, synthetic_train_size=8, synthetic_val_size=4)


def test_datasets_pickle_and_give_the_same_samples(facades_root):
    for cfg in (SMALL, replace(SMALL, dataset="facades", root=str(facades_root), label_nc=13)):
        dataset = build_dataset(cfg, "val")
        copy = pickle.loads(pickle.dumps(dataset))
        assert len(pickle.dumps(dataset)) < 100_000                    # paths and config only
        a, b = dataset[1], copy[1]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_loader_settings():
    dataset = build_dataset(SMALL, "train")
    loader = build_dataloader(dataset, 4, shuffle=True, num_workers=2, drop_last=True, seed=3)
    assert loader.num_workers == 2 and loader.persistent_workers and loader.prefetch_factor == 4
    assert loader.pin_memory == torch.cuda.is_available()
    assert loader.worker_init_fn is seed_worker and loader.drop_last
    serial = build_dataloader(dataset, 4, shuffle=False, num_workers=0, seed=3)
    assert not serial.persistent_workers


def test_seeded_shuffle_order():
    dataset = build_dataset(SMALL, "val")

    def order(seed):
        loader = build_dataloader(dataset, 2, shuffle=True, num_workers=0, seed=seed)
        return [i for batch in loader for i in batch["index"].tolist()]

    assert order(5) == order(5)
    assert sorted(order(5)) == list(range(4))
    assert any(order(5) != order(s) for s in range(6, 12))


def test_batches_through_worker_processes():
    dataset = build_dataset(SMALL, "train")
    loader = build_dataloader(dataset, 4, shuffle=True, num_workers=2, drop_last=True, seed=0)
    batches = list(loader)
    assert len(batches) == 2
    batch = batches[0]
    assert batch["image"].shape == (4, 3, 32, 32) and batch["label"].shape == (4, 32, 32)
    assert batch["label"].dtype == torch.int64 and len(batch["path"]) == 4
    assert sorted(i for b in batches for i in b["index"].tolist()) == list(range(8))


def test_batch_sampler_is_passed_through():
    dataset = build_dataset(SMALL, "val")
    loader = build_dataloader(dataset, batch_sampler=[[0, 1], [3]], num_workers=0)
    assert [b["index"].tolist() for b in loader] == [[0, 1], [3]]


def test_seed_worker_seeds_numpy():
    torch.manual_seed(1234)
    seed_worker(0)
    first = np.random.rand()
    torch.manual_seed(1234)
    seed_worker(0)
    assert np.random.rand() == first


def test_augmentation_follows_torch_seed():
    dataset = build_dataset(SMALL, "train")
    torch.manual_seed(7)
    a = dataset[0]
    torch.manual_seed(7)
    b = dataset[0]
    assert torch.equal(a["image"], b["image"])
    crops = set()
    for seed in range(8):
        torch.manual_seed(seed)
        crops.add(dataset[0]["label"].numpy().tobytes())
    assert len(crops) > 1


def test_config_problems():
    with pytest.raises(ConfigError, match="label_nc=10"):
        build_dataset(replace(SMALL, label_nc=5), "train")
    with pytest.raises(ConfigError, match="split"):
        build_dataset(SMALL, "test")
