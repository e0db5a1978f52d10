"""The numerics record and the pinned CPU mode: what is recorded, what the pin sets, that a process
which computed before the pin is refused, and that a pinned training gives the same weights under
another host's outer settings while a native one does not (so the check can fail)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spade_bench import numerics
from spade_bench.config import resolve
from spade_bench.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
needs_pin = pytest.mark.skipif(numerics.pin_unavailable() is not None,
                               reason=f"this host cannot pin: {numerics.pin_unavailable()}")


def _clean_env(**outer: str) -> dict[str, str]:
    """The environment of a fresh shell on another host: the suite's own pin removed, then `outer`."""
    env = {k: v for k, v in os.environ.items()
           if k not in (*numerics.PINNED_ENV, *numerics.UNPINNED_ENV, "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                        "OMP_WAIT_POLICY")}
    env["PYTHONPATH"] = str(ROOT)
    return {**env, **outer}


@needs_pin
def test_the_record_is_flat_and_shows_the_pin_in_force():
    state = numerics.numerics_state("cpu", mode="pinned")
    assert all(not isinstance(v, (dict, list, tuple)) for v in state.values()), "numerics must stay flat"
    assert state["mode"] == "pinned" and state["pin_unavailable"] is None
    # The test process runs pinned (tests/conftest.py): the kernels in force, not the request.
    assert state["torch_cpu_capability"] == "AVX2"
    assert state["onednn_isa"] == "Intel AVX2" and state["onednn_conv_impl"].endswith("avx2")
    assert state["mkl_cbwr"] in ("OFF", None) and state["openblas_core"] in ("Haswell", None)
    assert state["env.ONEDNN_MAX_CPU_ISA"] == "AVX2" and state["env.MKL_CBWR"] is None
    assert state["torch_threads"] == torch.get_num_threads() and state["device"] == "cpu"
    for key in ("cpu_vendor", "cpu_model", "onednn_version", "mkl_version", "cuda_device", "tf32_matmul", "bf16"):
        assert key in state
    assert state["cuda_device"] is None and state["bf16"] is False
    assert numerics.ensure_pinned(1) == "pinned"
    other = dict(state, torch_threads=2, onednn_isa="Intel AVX-512")
    assert numerics.differing_fields([state, other, state]) == ["onednn_isa", "torch_threads"]


def test_the_pinned_environment_overrides_the_outer_one():
    env = numerics.pinned_environment(2, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "MKL_CBWR": "AUTO",
                                          "DNNL_MAX_CPU_ISA": "AVX512_CORE", "OMP_NUM_THREADS": "8", "HOME": "/h"})
    assert env["ONEDNN_MAX_CPU_ISA"] == "AVX2" and env["ATEN_CPU_CAPABILITY"] == "avx2"
    assert "MKL_CBWR" not in env and "DNNL_MAX_CPU_ISA" not in env
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "2" and env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert env["OPENBLAS_CORETYPE"] == "Haswell" and env["HOME"] == "/h"
    assert numerics.cache_tag("pinned", 2) == "pinned-t2" and numerics.cache_tag("native", 0) == ""


def test_pinned_needs_a_fixed_thread_count():
    with pytest.raises(ConfigError, match="train.threads=1"):
        resolve("spade", preset="smoke", overrides=["train.threads=0"])
    cfg = resolve("spade", preset="smoke")
    assert (cfg.train.numerics, cfg.train.threads, cfg.train.channels_last_cpu) == ("pinned", 1, True)
    assert resolve("spade").train.numerics == "native"


@needs_pin
def test_a_process_that_computed_before_the_pin_is_refused_with_the_fix():
    body = """
import torch, torch.nn.functional as F
F.conv2d(torch.ones(1, 8, 8, 8), torch.ones(8, 8, 3, 3)); torch.softmax(torch.ones(4), 0)
from spade_bench.config import resolve
from spade_bench.engine import GANEngine
GANEngine(resolve("spade", preset="smoke", overrides=["loss.perceptual=none"]))
"""
    proc = subprocess.run([sys.executable, "-c", body], cwd=ROOT, env=_clean_env(ATEN_CPU_CAPABILITY="avx512"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "NumericsError" in proc.stderr and "ATen CPU capability" in proc.stderr
    assert "spade-bench command" in proc.stderr and "train.numerics=native" in proc.stderr


def _train(tmp_path: Path, name: str, mode: str, outer: dict[str, str], cores: int) -> dict[str, str]:
    """`spade-bench train` of 3 smoke steps in a fresh process; {tensor name: sha256 of its bytes}."""
    out = tmp_path / name
    args = [sys.executable, "-m", "cli", "train", "--preset", "smoke", "--out", str(out)]
    for item in ("train.steps=3", "train.decay_steps=1", "train.checkpoint_every=3", "train.sample_every=100",
                 "data.synthetic_train_size=8", "data.synthetic_val_size=2", "train.threads=1",
                 f"train.numerics={mode}"):
        args += ["--set", item]
    cpus = sorted(os.sched_getaffinity(0))[:cores]
    proc = subprocess.run(args, cwd=ROOT, env=_clean_env(**outer), capture_output=True, text=True, timeout=600,
                          preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    state = torch.load(out / "checkpoints" / "latest.pt", weights_only=True)
    digests = {}
    for net in ("generator", "discriminator"):
        for key, value in state[net].items():
            digests[f"{net}.{key}"] = hashlib.sha256(value.contiguous().numpy().tobytes()).hexdigest()
    digests["numerics"] = json.loads((out / "env.json").read_text())["numerics"]
    return digests


# Another host, as one machine can simulate it: AVX-512 oneDNN kernels, ATen's plain kernels,
# MKL's reproducibility mode on, OpenMP asking for 2 threads, and one core instead of all.
OTHER_HOST = {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AUTO",
              "OMP_NUM_THREADS": "2"}


@pytest.mark.slow
@needs_pin
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity")
def test_pinned_training_gives_the_same_weights_under_another_hosts_settings_and_native_does_not(tmp_path):
    cores = len(os.sched_getaffinity(0))
    here = _train(tmp_path, "pinned-here", "pinned", {}, cores)
    there = _train(tmp_path, "pinned-there", "pinned", OTHER_HOST, 1)
    here_state, there_state = here.pop("numerics"), there.pop("numerics")
    assert here == there, [k for k in here if here[k] != there.get(k)][:5]
    assert here_state["mode"] == there_state["mode"] == "pinned"
    assert here_state["torch_cpu_capability"] == there_state["torch_cpu_capability"] == "AVX2"
    assert here_state["env.MKL_CBWR"] is None and there_state["env.MKL_CBWR"] is None
    # The same outer change moves a native run's weights: the comparison above can fail.
    native_here = _train(tmp_path, "native-here", "native", {}, cores)
    native_there = _train(tmp_path, "native-there", "native", OTHER_HOST, 1)
    native_here.pop("numerics")
    assert native_there.pop("numerics")["torch_cpu_capability"] == "DEFAULT"
    assert native_here != native_there
