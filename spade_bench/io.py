"""Atomic file writes: a crash mid-write never leaves a half-written result behind.

Files: `atomic_write` (temporary file, fsync, rename; the file gets the permissions the
process's umask gives a new file, as `open` would, not mkstemp's 0600). Folders:
`staged_folder` (write a whole folder beside the old one, then swap it in).
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

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


def current_umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write via `write(fileobj)` to a temporary file in the same folder, fsync, rename.

    The file is readable as the umask allows (0644 under the usual 022, 0664 under 002 on a
    shared project folder): mkstemp's temporary file is 0600, which would hide every result
    from collaborators whatever their umask says."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.filename is None:
            # A failed write or fsync names no file: name the one being written (the CLI shows it).
            raise type(e)(e.errno, e.strerror or str(e), str(path)) from e
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


# ----------------------------------------------------------------------------- staged folders

_RENAME_EXCHANGE = 2   # renameat2 flag (Linux >= 3.15): swap two paths in one atomic step
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap folders `a` and `b` atomically (Linux renameat2); False where that is unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _clear_leftovers(final: Path) -> None:
    """Remove the staging folders that killed writers of `final` left beside it (their pid is dead)."""
    pattern = re.compile(rf"^\.{re.escape(final.name)}\.(staging|old)-(\d+)$")
    for entry in final.parent.iterdir():
        m = pattern.match(entry.name)
        if m and entry.is_dir() and not _pid_alive(int(m.group(2))):
            shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def staged_folder(final: str | Path, *, what: str = "output folder",
                  owns: Optional[Callable[[Path], bool]] = None) -> Iterator[Path]:
    """Write a folder as a whole: the body writes into a staging folder beside `final`
    (`.NAME.staging-PID`), which then replaces `final` in one step (an atomic exchange on
    Linux; elsewhere two renames). A kill, a full disk or an error in the body leaves `final`
    as it was, never old files beside new ones, and removes the staging folder (a killed
    writer's is removed by the next one).

    Args:
        final: the folder to write.
        what: what it is, for messages ("report folder").
        owns: whether an existing non-empty `final` is one this writer may replace (e.g. it
            holds a report); anything else is refused, so a mistyped --out never deletes a
            folder of other files.
    Raises StorageError when `final` is a file, holds files it does not own, or its parent
    cannot be written.
    """
    final = Path(final)
    if final.exists():
        if not final.is_dir():
            raise StorageError(f"{final} is a file, not a {what}; choose another folder (nothing was written)")
        if any(final.iterdir()) and not (owns is not None and owns(final)):
            listed = ", ".join(sorted(p.name for p in final.iterdir())[:5])
            raise StorageError(f"{final} holds files that are not a {what} ({listed}); choose another folder, "
                               f"or empty it (nothing was written)")
    parent = check_output_folder(final.parent, what=f"folder that holds the {what}")
    _clear_leftovers(final)
    staging = parent / f".{final.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        if not final.exists():
            os.rename(staging, final)
        elif _exchange(staging, final):
            shutil.rmtree(staging)   # now the old folder
        else:
            old = parent / f".{final.name}.old-{os.getpid()}"
            os.rename(final, old)
            os.rename(staging, final)
            shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
