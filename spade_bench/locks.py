"""One lock helper for the folders that one process at a time may write: a run folder while it
trains, its eval/ folder while it is scored, a sweep folder while a sweep runs there.

A lock is a small JSON file created with O_EXCL (atomic on local and NFS file systems) that
names its holder: pid, host, when it started and the command line. It is removed when the
holder finishes, whatever the outcome. A second process that finds it is refused with one line
that names the holder. A lock whose pid is no longer running on this host (the holder was
killed: SIGKILL, a power cut) is stale: it is named as such, and `break_lock=True` (the CLI's
`--break-lock`) clears it. A lock held by a live process on this host is never broken; one from
another host cannot be checked from here, so `--break-lock` clears it on the user's word.

Imports no torch: the CLI, runners and eval/ use it alike.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional

from spade_bench.errors import LockError


def _process_start(pid: int) -> Optional[str]:
    """The start time of process `pid` (clock ticks since boot, /proc/PID/stat field 22), which
    tells a reused pid from the holder; None where /proc is not there."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True   # someone else's process
    except (OverflowError, ValueError):
        return False
    return True


def own_record() -> dict[str, Any]:
    """What this process writes into a lock it takes."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "process_start": _process_start(pid),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}


def read_lock(path: Path) -> Optional[dict[str, Any]]:
    """The holder recorded in lock file `path`; None when it is missing or unreadable."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def holder_state(record: Optional[dict[str, Any]]) -> str:
    """"alive" (a running process on this host), "dead" (its pid runs no more here, or now runs
    another process: a stale lock), "elsewhere" (another host: cannot be checked) or "unreadable"."""
    if record is None or not isinstance(record.get("pid"), int):
        return "unreadable"
    if record.get("host") != socket.gethostname():
        return "elsewhere"
    pid = record["pid"]
    if not _pid_alive(pid):
        return "dead"
    started = record.get("process_start")
    if started is not None and _process_start(pid) not in (None, started):
        return "dead"   # the pid was reused by another process
    return "alive"


def _refusal(path: Path, what: str, record: Optional[dict[str, Any]], state: str, break_hint: str) -> str:
    folder = path.parent
    holder = "" if record is None else (
        f"pid {record.get('pid')} on {record.get('host')} since {record.get('started')} "
        f"({record.get('command') or 'command not recorded'})")
    clear = f"clear it with {break_hint}, or delete {path}" if break_hint else f"delete {path}"
    if state == "alive":
        return (f"{folder} is in use: the {what} is locked by {holder}; wait for it to finish, "
                f"or choose another folder")
    if state == "dead":
        return (f"{folder} has a stale lock: the {what} was locked by {holder}, which is no longer running "
                f"(killed?); if no other process writes there, {clear}")
    if state == "elsewhere":
        return (f"{folder} is in use: the {what} is locked by {holder}, another host, which cannot be "
                f"checked from here; wait for it, or if that process has ended, {clear}")
    return (f"{folder} has an unreadable lock file {path} (a process killed as it took the lock?); "
            f"if no other process writes there, {clear}")


def acquire(path: str | Path, what: str, *, break_lock: bool = False, break_hint: str = "--break-lock on the same command") -> dict:
    """Take lock file `path` (creating its folder) or raise LockError naming the holder.

    Args:
        path: the lock file.
        what: what the lock guards, for the message ("run folder").
        break_lock: clear a stale lock (dead pid here), an unreadable one, or one from another
            host first; a live holder on this host is still refused.
        break_hint: how the user clears a stale lock, for the message.
    Returns the record written (pass it to `release`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = own_record()
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            holder = read_lock(path)
            state = holder_state(holder)
            if break_lock and state != "alive":
                path.unlink(missing_ok=True)
                continue
            raise LockError(_refusal(path, what, holder, state, break_hint)) from None
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        return record
    raise LockError(f"{path} was taken by another process while clearing a stale lock; try again")


def release(path: str | Path, record: dict[str, Any]) -> None:
    """Remove lock file `path` if it still holds `record` (never another process's lock)."""
    path = Path(path)
    held = read_lock(path)
    if held is not None and held.get("pid") == record["pid"] and held.get("host") == record["host"]:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def folder_lock(path: str | Path, what: str, *, break_lock: bool = False,
                break_hint: str = "--break-lock on the same command",
                enabled: bool = True) -> Iterator[None]:
    """Hold lock file `path` for the body (`acquire`, then `release` whatever happens). A folder
    the lock itself created and that holds nothing else afterwards is removed again, so a
    command that fails before writing leaves no output behind. `enabled=False` (the other ranks
    of a DDP run) takes no lock."""
    if not enabled:
        yield
        return
    path = Path(path)
    created = not path.parent.exists()
    record = acquire(path, what, break_lock=break_lock, break_hint=break_hint)
    try:
        yield
    finally:
        release(path, record)
        if created:
            with contextlib.suppress(OSError):
                path.parent.rmdir()   # only when empty


__all__ = ["acquire", "release", "folder_lock", "read_lock", "holder_state", "own_record"]
