"""Checkpoints: atomic, checksummed step files, a `latest` pointer, exact resume, inference loading.

A checkpoint holds every network, every optimiser and LR schedule, the EMA generator, the
step, all RNG states (as tensors and plain numbers), the data position and the config with
its hash, so `torch.load(weights_only=True)` reads it. Layout:

    RUN/checkpoints/step_XXXXXXX.pt   one independent file per kept step
    RUN/checkpoints/latest.pt         a relative symlink to the newest step file (a copy
                                      where symlinks are not available), replaced atomically

Each file carries a sha256 of its content ("checksum"); `load_checkpoint` verifies it. On
resume a corrupt newest checkpoint is reported and the newest good one before it is used
(`find_resume_checkpoint`). Writes go to a temporary file that is fsynced and renamed, so a
kill mid-write never leaves a half-written checkpoint; a full disk is a `StorageError` that
says how many bytes the file needs.

Public API (other parts write and read checkpoints only through these):
`training_state`, `save_checkpoint`, `load_checkpoint`, `find_resume_checkpoint`, `resolve_checkpoint`,
`load_generator`, `rng_state` / `set_rng_state`, `latest_path`, `step_path`,
`list_step_checkpoints`.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import random
import re
from pathlib import Path
from typing import Any, Collection, Optional

import numpy as np
import torch

from spade_bench.config import (RunConfig, apply_overrides, config_hash, experiment_diff, from_dict,
                                load_config_file, to_dict)
from spade_bench.encoders import build_encoder
from spade_bench.errors import CheckpointError
from spade_bench.generators import build_generator
from spade_bench.io import atomic_write, raise_if_full
from spade_bench.run_folder import CHECKPOINTS as CHECKPOINT_DIR
from spade_bench.run_folder import RunFolder
LATEST = "latest.pt"
CHECKSUM_KEY = "checksum"
_STEP_RE = re.compile(r"^step_(\d+)\.pt$")


def step_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:07d}.pt"


def latest_path(run_dir: Path) -> Path:
    """RUN/checkpoints/latest.pt (a symlink to the newest step file)."""
    return Path(run_dir) / CHECKPOINT_DIR / LATEST


def list_step_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every step file, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def has_checkpoint(run_dir: Path) -> bool:
    return latest_path(run_dir).is_file() or bool(list_step_checkpoints(run_dir))


# ----------------------------------------------------------------------------- RNG states

def rng_state() -> dict[str, Any]:
    """Every RNG state as tensors and plain numbers (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "python": {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64),
                        "gauss": gauss}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- checksum

def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def tensor_bytes(tensor: torch.Tensor):
    """A tensor's raw bytes (contiguous, on the CPU) as a buffer hashlib reads without a copy.
    Through a uint8 view: numpy has no bfloat16, and a byte view works for every dtype."""
    t = tensor.detach().cpu().contiguous()
    return t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b""


def _digest(obj: Any, h) -> None:
    if isinstance(obj, torch.Tensor):
        h.update(f"T{obj.dtype}{tuple(obj.shape)}".encode())
        h.update(tensor_bytes(obj))
    elif isinstance(obj, dict):
        h.update(b"{")
        for key in sorted(obj, key=str):
            h.update(repr(key).encode())
            _digest(obj[key], h)
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[")
        for v in obj:
            _digest(v, h)
        h.update(b"]")
    else:
        h.update(repr(obj).encode())


def content_checksum(state: dict[str, Any]) -> str:
    """sha256 of a checkpoint's content (every tensor's bytes, dtype and shape; every value)."""
    h = hashlib.sha256()
    _digest({k: v for k, v in state.items() if k != CHECKSUM_KEY}, h)
    return h.hexdigest()


def state_nbytes(obj: Any) -> int:
    """Bytes of tensor data in a (nested) state: about the size of its checkpoint file."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(state_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(state_nbytes(v) for v in obj)
    return 0


# ----------------------------------------------------------------------------- save

def training_state(cfg: RunConfig, step: int, networks: dict[str, Any], *, rng: Optional[list] = None,
                   data_position: tuple[int, int] = (0, 0), wall_time_s: float = 0.0,
                   log_record: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The dict a checkpoint holds, in its one layout (the module docstring): a training run's
    saves and an imported run's step 0 are the same kind of file.

    Args:
        cfg: the run config (stored with its hash).
        step: iterations done.
        networks: `GANEngine.state_dict()` (weights, EMA, optimiser and schedule states).
        rng: `rng_state()` of every rank, rank order; default this process's only.
        data_position: (epoch, batch) of the next training batch.
        wall_time_s: training time so far, over every resume.
        log_record: the loss record of `step` when it was logged (kept, should the log lose it).
    """
    return {
        "step": step,
        **networks,
        "data_position": tuple(data_position),
        "wall_time_s": wall_time_s,
        "rng": [rng_state()] if rng is None else rng,
        "config": to_dict(cfg),
        "config_hash": config_hash(cfg),
        "log_record": log_record,
    }


def curve_steps(steps: int, points: int) -> list[int]:
    """The learning-curve checkpoints (eval.curve_points): `points` steps evenly spaced over
    training, round(k * steps / points) for k = 1..points, the last being `steps`; none for 0."""
    if points <= 0 or steps <= 0:
        return []
    return sorted({max(1, round(k * steps / points)) for k in range(1, points + 1)})


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], keep: int,
                    protect: Collection[int] = ()) -> Path:
    """Write step_XXXXXXX.pt atomically with its checksum, point latest.pt at it, and keep the
    last `keep` step files at or before `step`, besides the steps in `protect` (the learning
    curve's, `curve_steps`), which are never deleted.

    `state` is a `training_state` dict; it must hold only tensors and plain Python values. Raises StorageError when the disk is full or the folder read-only.
    """
    path = step_path(run_dir, step)
    state = _to_cpu(dict(state))
    state[CHECKSUM_KEY] = content_checksum(state)
    try:
        atomic_write(path, lambda f: torch.save(state, f))
    except (OSError, RuntimeError) as e:
        raise_if_full(e, path, state_nbytes(state))
        raise
    point_latest(path)
    kept = [(s, p) for s, p in list_step_checkpoints(run_dir) if s <= step]
    for old_step, old in kept[:-max(1, keep)]:
        if old_step != step and old_step not in protect:
            old.unlink(missing_ok=True)
    return path


def point_latest(path: Path) -> None:
    """Replace latest.pt by a relative symlink to `path` in one atomic rename (an independent
    copy where symlinks are unavailable). Never a hard link: damage to one file stays there."""
    latest = path.parent / LATEST
    tmp = path.parent / f".{LATEST}.{os.getpid()}.link"
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(path.name, tmp)
    except OSError:
        atomic_write(latest, lambda f: f.write(path.read_bytes()))
        return
    os.replace(tmp, latest)


# ----------------------------------------------------------------------------- load

def _numpy_rng_globals() -> list:
    """What an older checkpoint's numpy RNG state needs besides plain tensors: uint32 arrays.
    Admitting these four keeps torch.load's weights_only refusal of everything else (an object
    array needs numpy's ObjectDType, which is not among them), so no code from the file runs."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:   # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _plain_load(path: Path, *, numpy_arrays: bool = False) -> Any:
    """torch.load(weights_only=True): tensors and plain Python values only, never an unpickled
    object; with `numpy_arrays` also numeric numpy arrays (`_numpy_rng_globals`)."""
    if not numpy_arrays:
        return torch.load(path, map_location="cpu", weights_only=True)
    with torch.serialization.safe_globals(_numpy_rng_globals()):
        return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint with torch.load(weights_only=True) and verify its checksum.

    A missing, unreadable or corrupt file is a CheckpointError naming it. A file that holds
    anything but tensors and plain values is refused as "not a plain-tensor file", and nothing
    in it is unpickled; the message never suggests unpickling it, and never repeats the file's
    own error text (which the file's author controls).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = _plain_load(path)
    except pickle.UnpicklingError as e:
        # Which refusal to give, never text to show: the file's author controls the error text.
        if "weights only" not in str(e).lower():
            raise CheckpointError(f"checkpoint {path} cannot be read (not a torch file): it is truncated or "
                                  f"corrupt; an older one may remain in {path.parent}") from None
        try:
            _plain_load(path, numpy_arrays=True)
        except Exception:  # noqa: BLE001 - anything else it holds is refused the same way
            raise CheckpointError(
                f"checkpoint {path} refused: not a plain-tensor file (it holds Python objects that only a "
                f"full unpickle would build, and unpickling can run code from the file); nothing in it was "
                f"loaded. Delete it, or replace it with a checkpoint spade-bench wrote") from None
        raise CheckpointError(
            f"checkpoint {path} is in the older format (its RNG state holds numpy arrays, which weights_only "
            f"loading refuses); convert it once: python -c \"from spade_bench.checkpoint import "
            f"upgrade_checkpoint; upgrade_checkpoint('{path}')\" (it admits tensors, plain values and numeric "
            f"numpy arrays only, and runs nothing from the file)") from None
    except Exception as e:  # noqa: BLE001 - a truncated or corrupt file becomes one clear message
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(e).__name__}): it is truncated or corrupt; "
            f"an older one may remain in {path.parent}") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path} is not a spade-bench checkpoint (no step)")
    stored = state.get(CHECKSUM_KEY)
    if stored is not None and content_checksum(state) != stored:
        raise CheckpointError(f"checkpoint {path} is corrupt: its content does not match its sha256 checksum; "
                              f"an older one may remain in {path.parent}")
    if map_location not in (None, "cpu") and torch.device(map_location).type != "cpu":
        state = _move(state, map_location)
    return state


def upgrade_checkpoint(path: str | Path) -> Path:
    """Rewrite a checkpoint of the older format (numpy RNG state, no checksum) in the current one.

    Loads with weights_only=True, admitting numeric numpy arrays besides tensors (the older RNG
    state), so nothing in the file is unpickled into other objects and no code from it runs; a
    file that holds anything else is refused like any other.
    """
    path = Path(path)
    try:
        state = _plain_load(path, numpy_arrays=True)
    except Exception:  # noqa: BLE001 - refused, never retried with a full unpickle
        raise CheckpointError(f"checkpoint {path} refused: not a plain-tensor file (with numpy arrays at "
                              f"most); nothing was converted") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path} is not a spade-bench checkpoint (no step)")
    for rng in state.get("rng", []):
        if isinstance(rng.get("numpy"), tuple):
            kind, keys, pos, has_gauss, cached = rng["numpy"]
            rng["numpy"] = {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)),
                            "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
        if isinstance(rng.get("python"), tuple):
            version, py_state, gauss = rng["python"]
            rng["python"] = {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64),
                             "gauss": gauss}
    state["data_position"] = tuple(int(v) for v in state.get("data_position", (0, 0)))
    state = _to_cpu(state)
    state[CHECKSUM_KEY] = content_checksum(state)
    atomic_write(path, lambda f: torch.save(state, f))
    return path


def _move(obj: Any, device: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _move(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_move(v, device) for v in obj)
    return obj


def find_resume_checkpoint(run_dir: Path, step: Optional[int] = None
                           ) -> tuple[Path, dict[str, Any], list[str]]:
    """The checkpoint to resume from: (path, state, reports of corrupt newer files skipped).

    With `step`, exactly that step file (a CheckpointError names the available ones). Without,
    the file latest.pt points to, then older step files, newest first: a corrupt one is
    reported and skipped, never silently used. No readable checkpoint is a CheckpointError.
    """
    run_dir = Path(run_dir)
    available = list_step_checkpoints(run_dir)
    have = ", ".join(str(s) for s, _ in available) or "none"
    if step is not None:
        path = step_path(run_dir, step)
        if not path.is_file():
            raise CheckpointError(f"no checkpoint for step {step} in {run_dir / CHECKPOINT_DIR} "
                                  f"(available steps: {have})")
        return path, load_checkpoint(path), []
    candidates: list[Path] = []
    latest = latest_path(run_dir)
    newest_step = None
    if latest.is_file():
        target = latest.resolve()
        m = _STEP_RE.match(target.name)
        newest_step = int(m.group(1)) if m else None
        candidates.append(target if target.is_file() else latest)   # reports name the step file
    candidates += [p for s, p in reversed(available)
                   if (newest_step is None or s <= newest_step) and p.resolve() != latest.resolve()]
    skipped: list[str] = []
    for path in candidates:
        try:
            return path, load_checkpoint(path), skipped
        except CheckpointError as e:
            skipped.append(str(e))
    if skipped:
        raise CheckpointError(f"no readable checkpoint in {run_dir / CHECKPOINT_DIR}: " + "; ".join(skipped))
    raise CheckpointError(f"{run_dir} has no checkpoint to resume from; start it without --resume "
                          f"(or pass the --out of an earlier run)")


def resolve_checkpoint(run_dir: Path, checkpoint: str = "latest") -> Path:
    """'latest', a step number, or a path -> an existing checkpoint file."""
    run_dir = Path(run_dir)
    if checkpoint == "latest":
        path = latest_path(run_dir)
    elif str(checkpoint).isdigit():
        path = step_path(run_dir, int(checkpoint))
    else:
        path = Path(checkpoint)
    if not path.is_file():
        have = [str(s) for s, _ in list_step_checkpoints(run_dir)]
        hint = f"available steps: {', '.join(have)}" if have else "the run has no checkpoints yet; train it first"
        raise CheckpointError(f"no checkpoint {path} ({hint})")
    return path


def config_mismatch_message(saved: dict[str, Any], cfg, where: str) -> str:
    """'the config differs in KEYS (key: saved X, now Y; ...)' for a refused resume."""
    diff = experiment_diff(saved, cfg)
    lines = "; ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in diff.items())
    return f"the config differs from {where} in {', '.join(diff)} ({lines})" if diff else \
        f"the config hash differs from {where}"


def saved_run_config(run_dir: str | Path):
    """A run's config: RUN/config.json, or, when that file is gone, the config stored in its
    newest readable checkpoint. Returns (RunConfig, source path)."""
    run_dir = Path(run_dir)
    cfg_path = RunFolder(run_dir).config
    if cfg_path.is_file():
        return load_config_file(cfg_path), cfg_path
    if not has_checkpoint(run_dir):
        raise CheckpointError(f"{run_dir} is not a run directory (no {cfg_path.name} and no checkpoints); "
                              f"pass the folder `train --out` wrote")
    path, state, _ = find_resume_checkpoint(run_dir)
    return from_dict(state["config"]), path


def check_run_label_flags(run_dir: str | Path, overrides: list[str]) -> None:
    """`--label-nc` / `--dont-care` on eval and synth: they must match what the run was trained
    with (the generator's input channels are fixed); a CheckpointError names both otherwise."""
    if not overrides:
        return
    cfg, source = saved_run_config(run_dir)
    asked = apply_overrides(cfg, overrides)
    if asked.data != cfg.data:
        raise CheckpointError(
            f"{run_dir} was trained with data.label_nc={cfg.data.label_nc}, data.dont_care_value="
            f"{cfg.data.dont_care_value} (see {source}); its generator cannot take other label values. "
            f"Drop --label-nc/--dont-care, or train a run with them (spade-bench train --label-nc N --dont-care V)")


def _load_network(net: torch.nn.Module, weights: Any, path: Path, role: str) -> None:
    """Load `weights` (the checkpoint's `role` entry) into `net`, or a CheckpointError naming the
    file and the first tensors that do not fit (nothing is loaded then)."""
    if not isinstance(weights, dict):
        raise CheckpointError(f"{path} holds no {role} weights; it is not a checkpoint of this run")
    own = net.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shape = [f"{k} (checkpoint {tuple(weights[k].shape)}, network {tuple(own[k].shape)})" for k in own
             if k in weights and isinstance(weights[k], torch.Tensor) and weights[k].shape != own[k].shape]
    if missing or unexpected or shape:
        parts = [f"{label} {', '.join(names[:3])}{f' and {len(names) - 3} more' if len(names) > 3 else ''}"
                 for label, names in (("shape", shape), ("missing", missing), ("unexpected", unexpected)) if names]
        raise CheckpointError(f"the {role} in {path} does not fit the network the run's config.json builds "
                              f"({'; '.join(parts)}); the checkpoint belongs to another run or config")
    net.load_state_dict(weights)


def load_generator(run_dir: str | Path, checkpoint: str = "latest", device: str | torch.device = "cpu",
                   use_ema: Optional[bool] = None):
    """Rebuild a run's generator (EMA weights when the run kept them) for inference.

    Returns (cfg, generator, encoder_or_None, step); the networks are in eval mode.
    """
    run_dir = Path(run_dir)
    cfg, source = saved_run_config(run_dir)
    path = resolve_checkpoint(run_dir, checkpoint)
    state = load_checkpoint(path, map_location="cpu")
    # The networks are built from the run's config: a checkpoint of another experiment (another
    # variant copied in, a hand-edited config.json) would be scored as this run, or not load.
    stored = state.get("config")
    if isinstance(stored, dict) and (diff := experiment_diff(stored, cfg)):
        shown = "; ".join(f"{k}: checkpoint {a!r}, {source.name} {b!r}" for k, (a, b) in list(diff.items())[:6])
        more = f" and {len(diff) - 6} more" if len(diff) > 6 else ""
        raise CheckpointError(
            f"{path} was trained with another config than {source} ({shown}{more}); refusing to use it as this "
            f"run. Restore the run's config.json, or score the checkpoint in its own run folder")
    generator = build_generator(cfg)
    use_ema = cfg.train.ema if use_ema is None else use_ema
    role = "ema" if use_ema and state.get("ema") is not None else "generator"
    _load_network(generator, state.get(role), path, role)
    encoder = build_encoder(cfg)
    if encoder is not None:
        _load_network(encoder, state.get("encoder"), path, "encoder")
        encoder.to(device).eval()
    generator.to(device).eval()
    return cfg, generator, encoder, int(state["step"])
