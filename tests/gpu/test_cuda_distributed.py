"""One-process runs of the multi-GPU code paths: SyncBatchNorm's synchronised kernels under
an NCCL group, and DDP (NCCL on CUDA, gloo as the CPU twin) giving the plain module's result.

With a world size of 1 the results must equal the unsynchronised ones: statistics gathered
over one rank are that rank's statistics. Tolerances: relative L2 1e-5 for SyncBatchNorm
(other kernels, same arithmetic), 1e-6 for DDP (its all-reduce over one rank is a copy and
a division by 1).
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.nn.modules._functions import SyncBatchNorm as SyncBatchNormFunction  # private: see its test
from torch.nn.parallel import DistributedDataParallel

from cuda_helpers import TARGETS, one_process_group, relative_error, tiny_config
from runners.bench import random_batch
from spade_bench.generators import build_generator


@pytest.mark.gpu
def test_syncbatchnorm_kernels_match_batchnorm_in_a_one_process_nccl_group(cuda, tmp_path):
    # The public nn.SyncBatchNorm skips synchronisation when the group has one rank, so its
    # autograd function (the code path every multi-GPU run takes) is called directly.
    draw = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 16, 32, 32, generator=draw) * 3 + 1).to(cuda)
    weight = torch.rand(16, generator=draw).add(0.5).to(cuda)
    bias = torch.randn(16, generator=draw).to(cuda)
    upstream = torch.randn(4, 16, 32, 32, generator=draw).to(cuda)
    results = {}
    with one_process_group("nccl", tmp_path) as group:
        for name in ("sync", "plain"):
            inp, w, b = (t.clone().requires_grad_() for t in (x, weight, bias))
            mean, var = torch.zeros(16, device=cuda), torch.ones(16, device=cuda)
            if name == "sync":
                out = SyncBatchNormFunction.apply(inp, w, b, mean, var, 1e-5, 0.1, group, 1)
            else:
                out = F.batch_norm(inp, mean, var, w, b, True, 0.1, 1e-5)
            out.backward(upstream)
            results[name] = {"out": out.detach(), "grad_input": inp.grad, "grad_weight": w.grad,
                             "grad_bias": b.grad, "running_mean": mean, "running_var": var}
    for key, reference in results["plain"].items():
        assert relative_error(results["sync"][key], reference) < 1e-5, key
    assert results["sync"]["running_mean"].abs().max() > 0.05  # the statistics were updated


@pytest.mark.parametrize("target", TARGETS)
def test_ddp_in_a_one_process_group_matches_the_plain_generator(target, tmp_path):
    device = torch.device(target)
    # CUDA: the generator's SyncBatchNorm under NCCL, as a multi-GPU run has it. A CPU group
    # (gloo) cannot run SyncBatchNorm, and the trainer swaps in BatchNorm there.
    norm = "syncbatch" if device.type == "cuda" else "batch"
    cfg = tiny_config(f"generator.param_free_norm={norm}")
    torch.manual_seed(0)
    plain = build_generator(cfg).to(device).train()
    segmap, _ = random_batch(cfg, 2, device, torch.Generator().manual_seed(0))
    with one_process_group("nccl" if device.type == "cuda" else "gloo", tmp_path):
        ids = [torch.cuda.current_device()] if device.type == "cuda" else None
        wrapped = DistributedDataParallel(copy.deepcopy(plain), device_ids=ids)
        outputs, grads = [], []
        for module in (wrapped, plain):
            optimiser = torch.optim.Adam(module.parameters(), lr=1e-3)
            fake = module(segmap)
            fake.square().mean().backward()
            grads.append(torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None]))
            optimiser.step()
            outputs.append(module(segmap).detach())  # after one step: the update went through
    if norm == "syncbatch":
        assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in plain.modules())
    assert relative_error(grads[0], grads[1]) < 1e-6
    assert relative_error(outputs[0], outputs[1]) < 1e-6
