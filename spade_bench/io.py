"""Atomic file writes: a crash mid-write never leaves a half-written result behind."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

from spade_bench.errors import StorageError


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Full hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write via `write(fileobj)` to a temporary file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), mode="w")


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def free_bytes(folder: str | Path) -> Optional[int]:
    """Free bytes on the file system that holds `folder` (or its nearest existing parent)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _gib(n: int) -> str:
    return f"{n} bytes ({n / 2 ** 30:.2f} GiB)"


def check_output_folder(folder: str | Path, need_bytes: int = 0, *, what: str = "output folder") -> Path:
    """Make sure `folder` can be created and written, with `need_bytes` free, before any work.

    Creates the folder, writes and deletes a probe file. A read-only file system, a missing
    permission, a parent that is a file, or too little space is a StorageError naming the
    folder and the fix.
    """
    folder = Path(folder)
    fix = f"choose another {what} (for training: --out)"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".spade-bench-write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except (FileExistsError, NotADirectoryError):
        raise StorageError(f"{folder}: cannot be used as the {what}: it, or a folder above it, is a file; {fix}") from None
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise StorageError(f"no space left: {folder} is full; free space or {fix}") from None
        raise StorageError(f"{folder}: the {what} is not writable ({e.strerror or e}); "
                           f"fix its permissions or {fix}") from None
    free = free_bytes(folder)
    if need_bytes and free is not None and free < need_bytes:
        raise StorageError(f"no space left: {folder} needs {_gib(need_bytes)} but has {_gib(free)} free; "
                           f"free space or {fix}")
    return folder


def raise_if_full(error: BaseException, path: Path, need_bytes: int) -> None:
    """Turn a failed write of `path` into a StorageError when the disk is full or read-only;
    otherwise return (the caller re-raises the original error)."""
    code = getattr(error, "errno", None)
    free = free_bytes(path.parent)
    full = code == errno.ENOSPC or "No space left" in str(error) or (
        isinstance(error, RuntimeError) and "write" in str(error) and free is not None and free < need_bytes)
    if full:
        have = f"; {_gib(free)} free" if free is not None else ""
        raise StorageError(f"no space left: {path} needs {_gib(need_bytes)}{have}. Free space, or move the run "
                           f"to a bigger disk and continue it there with --resume (nothing was lost)") from None
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        raise StorageError(f"{path}: cannot write ({error.strerror}); fix the folder's permissions, or move "
                           f"the run and continue it with --resume") from None
