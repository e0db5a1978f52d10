"""The training batches' order: seeded per sample, shuffled per epoch, resumable mid-epoch.

A resumed run sees exactly the batches a straight run would have seen from the same step:
the order comes from (run seed, epoch) alone, each sample's augmentation from (run seed,
epoch, index) alone, and `TrainBatches.position` ((epoch, batch) of the next batch) is saved
with every checkpoint.
"""
from __future__ import annotations

import random
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from spade_bench.distributed import DistInfo
from spade_bench.errors import ConfigError
from spade_bench.signals import ignore_stop_signals


class SeededSamples(Dataset):
    """Wrap a dataset so each sample's augmentation draws from a seed carried with its index.

    Keys are (index, seed). Random crops and flips then depend only on (run seed, epoch,
    index), not on worker scheduling, which makes a resumed run see the same batches.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            np.random.seed(seed % (2 ** 32))
            torch.manual_seed(seed)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


class ResumableBatchSampler:
    """Batches of (index, seed) in a per-epoch order, able to start mid-epoch.

    The order comes from a DistributedSampler (seeded, set_epoch), so every rank sees its
    own shard; without DDP it is the single-rank case of the same sampler.
    """

    def __init__(self, size: int, batch_size: int, seed: int, info: DistInfo):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.sampler = DistributedSampler(range(size), num_replicas=info.world_size, rank=info.rank,
                                          shuffle=True, seed=seed, drop_last=True)
        self.batches_per_epoch = len(self.sampler) // batch_size
        if self.batches_per_epoch == 0:
            raise ConfigError(
                f"the training set has {size} samples, fewer than one batch of {batch_size} per rank "
                f"({info.world_size} rank(s)); lower train.batch_size")
        self.start_epoch = 0
        self.start_batch = 0

    def set_position(self, epoch: int, batch: int) -> None:
        """Start the next iteration at batch `batch` of epoch `epoch`."""
        self.start_epoch, self.start_batch = epoch, batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        # Locals only: a DataLoader prefetches ahead, so the consumer tracks the position.
        epoch, start = self.start_epoch, self.start_batch
        while True:
            self.sampler.set_epoch(epoch)
            order = list(self.sampler)
            for b in range(start, self.batches_per_epoch):
                idx = order[b * self.batch_size:(b + 1) * self.batch_size]
                yield [(i, (self.seed * 1_000_003 + epoch) * 1_000_033 + i) for i in idx]
            epoch, start = epoch + 1, 0


class TrainBatches:
    """The endless stream of training batches of one rank, and the position of the next one.

    Args:
        dataset: the training set (`spade_bench.data.build_dataset(..., "train")`).
        batch_size: this rank's batch.
        seed: train.seed.
        info: the process's rank and world size.
        num_workers: DataLoader workers (they ignore stop signals; the main process stops them).
        pin_memory: pin host batches (for a CUDA device).
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, info: DistInfo, *,
                 num_workers: int = 0, pin_memory: bool = False):
        self.dataset, self.seed = dataset, seed
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.sampler = ResumableBatchSampler(len(dataset), batch_size, seed, info)
        self.position: tuple[int, int] = (0, 0)

    def resume_at(self, position: tuple[int, int]) -> None:
        """Continue with batch `position[1]` of epoch `position[0]` (a checkpoint's data_position)."""
        self.position = (int(position[0]), int(position[1]))
        self.sampler.set_position(*self.position)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        workers = self.num_workers
        # Its own generator: creating the iterator must not draw from the global RNG, or a
        # resumed run would diverge from a straight one.
        loader = DataLoader(SeededSamples(self.dataset), batch_sampler=self.sampler, num_workers=workers,
                            pin_memory=self.pin_memory, persistent_workers=workers > 0,
                            prefetch_factor=4 if workers > 0 else None, worker_init_fn=ignore_stop_signals,
                            generator=torch.Generator().manual_seed(self.seed))
        for batch in loader:
            epoch, index = self.position[0], self.position[1] + 1
            self.position = (epoch + 1, 0) if index >= self.sampler.batches_per_epoch else (epoch, index)
            yield batch
