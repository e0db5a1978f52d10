"""One intra-op thread for these small-model tests.

The networks here are tiny; on a shared 2-core machine OpenMP threads that wait for each
other make them several times slower than one thread does.
"""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
