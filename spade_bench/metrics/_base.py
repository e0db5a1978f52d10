"""The metric contract: what every file in spade_bench/metrics/ declares and implements.

One metric is one subclass of `Metric`, decorated with `@register_metric` (lm-evaluation-
harness's `@register_metric`, torchmetrics' `Metric`). It carries three things:

- its declaration (class attributes): the metrics.json key, the version, which direction is
  better, the table label and digits, what it is computed from (the FID features or the
  segmenter's per-image counts), the protocol keys its value depends on, and the reference
  that bounds what the evaluator can resolve;
- its accumulate/reduce pair, in torchmetrics' style: `add_state` in `__init__`, `update(batch)`
  per evaluation batch, `compute(context)` once, and `sync(gather)` to reduce the states of
  several ranks (sum or concatenate) before `compute`;
- its per-image replicate: `replicator(inputs)` turns the files the harness writes
  (per_image_counts.npz, fake_features.npy, the real statistics) into a function from image
  multiplicities [B, N] to the metric on each of B resamples, which reports/bootstrap.py uses.

Nothing here imports torch: reports/ reads metrics with NumPy only, and `spade-bench --help`
lists them without loading torch. A metric that needs torch to compute imports it inside
`compute`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Optional

import numpy as np

# Protocol keys every score depends on: the images it was computed from.
COMMON_PROTOCOL_KEYS = ("num_images", "eval_size", "image_resize")

Replicator = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Reference:
    """A metrics.json "references" entry that bounds what the evaluator can resolve.

    The harness computes it with the metric itself, with real photos in place of the generated
    ones: the segmenter on the real validation photos (segmentation metrics), or real training
    photos against the real set (feature metrics).

    Args:
        key: the metrics.json "references" key.
        bound: "ceiling" (a mean above it cannot be ranked by this evaluator) or "floor" (below).
        row: label of the report's reference row it sits in ("{real_set}" is filled in);
            references with the same row share one.
        line: label of its line in the metric figure.
        what: how the report names it after a value beyond it ("" for none).
    """

    key: str
    bound: str
    row: str
    line: str
    what: str = ""


@dataclass(frozen=True)
class Batch:
    """What the harness hands `update` for one batch of evaluated images.

    Args:
        fake_features: float32 [B, D] FID-Inception pool3 features of the generated images.
        counts: per-image segmentation counts of the batch: tp, fp, fn int64 [B, K], valid [B].
    """

    fake_features: Optional[np.ndarray] = None
    counts: Optional[Mapping[str, np.ndarray]] = None


@dataclass(frozen=True)
class Context:
    """What `compute` may use besides the accumulated state.

    Args:
        real_features: [M, D] features of the real photos the generated ones are compared with.
    """

    real_features: Optional[np.ndarray] = None


@dataclass
class Score:
    """What `compute` returns.

    Args:
        value: the metric (None when it cannot be computed; `warnings` says why).
        extras: further metrics.json "metrics" keys it fills (declared in `Metric.extras`).
        protocol: metrics.json "protocol" values it fixes (declared in `Metric.protocol_keys`).
        warnings: evaluator warnings to record beside it.
    """

    value: Optional[float]
    extras: dict[str, Optional[float]] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ReplicateInputs:
    """One run's per-image files as reports/ reads them (float64 arrays; None when absent).

    Args:
        counts: per-image tp, fp, fn [N, K] (per_image_counts.npz).
        features: [N, D] generated-image features (fake_features.npy).
        real: the cached real statistics: mu [D], sigma [D, D] and, when stored, features [M, D].
    """

    counts: Optional[Mapping[str, np.ndarray]] = None
    features: Optional[np.ndarray] = None
    real: Optional[Mapping[str, np.ndarray]] = None


_REDUCTIONS = ("sum", "cat")


class Metric:
    """Base class of every metric; subclass it in spade_bench/metrics/<name>.py.

    Declaration (class attributes):
        name: the metrics.json "metrics" key and the `eval --metric` choice.
        version: "<family>/<n>"; bump n when the computation changes in a way that moves the
            numbers. Sweeps re-score a pair whose metrics.json holds another version; reports
            show such runs as "-" with a note.
        direction: "higher" or "lower" is better.
        label, latex, digits, scale: the table column (shown value = raw value * scale).
        interval_digits: decimals of a difference and its interval (None: digits + 1).
        short: the name in sentences ("mIoU agrees").
        order: column order (lower first).
        inputs: "features" (FID-Inception pool3 features of the generated images, compared
            with the real photos') or "segmentation" (per-image counts of the segmenter's
            predictions on the generated images against the label maps).
        aliases: further `--metric` spellings.
        group: metrics of one group share their state's source and are scored together
            (asking for one scores all; e.g. mIoU and pixel accuracy, one confusion matrix).
        extras: further metrics.json "metrics" keys its `compute` fills (KID's kid_std).
        protocol_keys: metrics.json "protocol" keys its value depends on, besides
            COMMON_PROTOCOL_KEYS: runs that differ there are not comparable (a report
            refuses them), and a kept score is dropped when a new evaluation changes one.
        recorded_keys: protocol keys it records but that do not decide comparability.
        files: metrics.json "files" entries its replicate reads.
        reference: the Reference that bounds it, or None.
        min_images: fewer evaluated images than this is an error before anything is generated.
        tolerance: (absolute, relative) slack between metrics.json and the value recomputed
            from the per-image files, beyond which a report flags the run.
        costly_replicates: each replicate costs a matrix decomposition; the bootstrap draws
            fewer of them (BootstrapSettings.fid_replicates).
    """

    name: ClassVar[str]
    version: ClassVar[str]
    direction: ClassVar[str]
    label: ClassVar[str]
    latex: ClassVar[str]
    digits: ClassVar[int]
    scale: ClassVar[float] = 1.0
    interval_digits: ClassVar[Optional[int]] = None
    short: ClassVar[str]
    order: ClassVar[int] = 100
    inputs: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    group: ClassVar[Optional[str]] = None
    extras: ClassVar[tuple[str, ...]] = ()
    protocol_keys: ClassVar[tuple[str, ...]] = ()
    recorded_keys: ClassVar[tuple[str, ...]] = ()
    files: ClassVar[tuple[str, ...]] = ()
    reference: ClassVar[Optional[Reference]] = None
    min_images: ClassVar[int] = 1
    tolerance: ClassVar[tuple[float, float]] = (0.0, 0.0)
    costly_replicates: ClassVar[bool] = False

    # ------------------------------------------------------------------ declaration helpers

    @classmethod
    def describe(cls) -> str:
        """The implementation in words (package versions included) for metrics.json."""
        return ""

    @classmethod
    def version_string(cls) -> str:
        """protocol.metric_versions[name]: "<version> (<describe()>)"."""
        text = cls.describe()
        return f"{cls.version} ({text})" if text else cls.version

    @classmethod
    def higher_is_better(cls) -> bool:
        return cls.direction == "higher"

    @classmethod
    def compute_group(cls) -> str:
        return cls.group or cls.name

    @classmethod
    def from_settings(cls, settings: Any = None) -> "Metric":
        """A fresh instance configured from the run's `eval` config section (or any object
        with the same attribute names); metrics without settings ignore it."""
        return cls()

    # ------------------------------------------------------------------ state

    def __init__(self) -> None:
        self._defaults: dict[str, tuple[Any, str]] = {}

    def add_state(self, name: str, default: Any, reduce: str) -> None:
        """Declare a state attribute: `reduce` is "sum" (arrays or numbers, added across ranks)
        or "cat" (a list of arrays, concatenated across ranks)."""
        if reduce not in _REDUCTIONS:
            raise ValueError(f"state {name!r}: reduce must be one of {_REDUCTIONS}, got {reduce!r}")
        self._defaults[name] = (default, reduce)
        setattr(self, name, _fresh(default))

    def reset(self) -> None:
        for name, (default, _) in self._defaults.items():
            setattr(self, name, _fresh(default))

    def sync(self, gather: Callable[[Any], list[Any]]) -> None:
        """Reduce every state over ranks. `gather(obj)` returns every rank's `obj` (e.g.
        torch.distributed.all_gather_object wrapped to return the list); after it, each rank
        holds what one process that saw all batches would hold."""
        for name, (_, reduce) in self._defaults.items():
            values = gather(getattr(self, name))
            if reduce == "cat":
                setattr(self, name, [part for value in values for part in value])
            else:
                present = [v for v in values if v is not None]
                setattr(self, name, None if not present else _sum(present))

    def update(self, batch: Batch) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement update()")

    def compute(self, context: Context = Context()) -> Score:
        raise NotImplementedError(f"{type(self).__name__} does not implement compute()")

    # ------------------------------------------------------------------ bootstrap

    @classmethod
    def replicator(cls, inputs: ReplicateInputs) -> Replicator | str:
        """A function weights [B, N] -> values [B] on resamples of the evaluated images (paired
        by index across runs), or a string saying which input is missing."""
        return "no per-image replicate"

    @classmethod
    def consistency_slack(cls, reported: float, values: Mapping[str, Optional[float]]) -> float:
        """How far a recomputed full-set value may be from metrics.json (`values`: the run's
        metrics.json "metrics")."""
        absolute, relative = cls.tolerance
        return absolute + relative * abs(reported)


def _fresh(default: Any) -> Any:
    if isinstance(default, list):
        return list(default)
    if isinstance(default, np.ndarray):
        return default.copy()
    return default


def _sum(values: list[Any]) -> Any:
    total = values[0]
    for value in values[1:]:
        total = total + value
    return total
