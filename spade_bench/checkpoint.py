"""Checkpoints: atomic writes, the last K kept plus `latest`, exact resume, inference loading.

A checkpoint holds every network, every optimiser, the EMA generator, the step, all RNG
states, the data position and the config with its hash. Writes go to a temporary file
that is fsynced and renamed, so a kill mid-write never corrupts `latest.pt`.
"""
from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from spade_bench.errors import CheckpointError
from spade_bench.io import atomic_write

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.pt"
_STEP_RE = re.compile(r"^step_(\d+)\.pt$")


def step_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:07d}.pt"


def latest_path(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / LATEST


def list_step_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _STEP_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write step_XXXXXXX.pt atomically, point latest.pt at it, and prune to the last `keep`."""
    path = step_path(run_dir, step)
    atomic_write(path, lambda f: torch.save(state, f))
    _point_latest(path)
    for old_step, old in list_step_checkpoints(run_dir)[:-max(1, keep)]:
        if old_step != step:
            old.unlink(missing_ok=True)
    return path


def _point_latest(path: Path) -> None:
    """Replace latest.pt by a hard link to `path` in one atomic rename (copy if links fail)."""
    latest = path.parent / LATEST
    tmp = path.parent / f".{LATEST}.link"
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:
        atomic_write(latest, lambda f: f.write(path.read_bytes()))
        return
    os.replace(tmp, latest)


def resolve_checkpoint(run_dir: Path, checkpoint: str = "latest") -> Path:
    """'latest', a step number, or a path -> an existing checkpoint file."""
    run_dir = Path(run_dir)
    if checkpoint == "latest":
        path = latest_path(run_dir)
    elif checkpoint.isdigit():
        path = step_path(run_dir, int(checkpoint))
    else:
        path = Path(checkpoint)
    if not path.is_file():
        have = [str(s) for s, _ in list_step_checkpoints(run_dir)]
        hint = f"available steps: {', '.join(have)}" if have else "the run has no checkpoints yet; train it first"
        raise CheckpointError(f"no checkpoint {path} ({hint})")
    return path


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    try:
        # Our own files: they hold RNG states and numpy arrays, so weights_only cannot be used.
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - a corrupt file becomes one clear message
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); "
            f"an older one may remain in {path.parent}") from None


def load_generator(run_dir: str | Path, checkpoint: str = "latest", device: str | torch.device = "cpu",
                   use_ema: Optional[bool] = None):
    """Rebuild a run's generator (EMA weights when the run kept them) for inference.

    Returns (cfg, generator, encoder_or_None, step); the networks are in eval mode.
    """
    from spade_bench.config import load_config_file
    from spade_bench.encoders import build_encoder
    from spade_bench.generators import build_generator

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{run_dir} is not a run directory (no config.json); pass the folder `train --out` wrote")
    cfg = load_config_file(cfg_path)
    state = load_checkpoint(resolve_checkpoint(run_dir, checkpoint), map_location="cpu")
    generator = build_generator(cfg)
    use_ema = cfg.train.ema if use_ema is None else use_ema
    weights = state["ema"] if use_ema and state.get("ema") is not None else state["generator"]
    generator.load_state_dict(weights)
    encoder = build_encoder(cfg)
    if encoder is not None:
        encoder.load_state_dict(state["encoder"])
        encoder.to(device).eval()
    generator.to(device).eval()
    return cfg, generator, encoder, int(state["step"])
