"""The protocol record: every choice that changes a score, written beside the score.

Published SPADE re-evaluations disagree because resolution, resize mode and segmenter
differ and go unreported (../shared/REFERENCE.md section 6). Every metrics.json written by
the harness, and every folder comparison, carries this record.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

from spade_bench.metrics import get_metric, list_metrics
from spade_bench.run_folder import code_state  # noqa: F401 - re-exported: the harness records it

# Each metric's version lives in its file (spade_bench/metrics/<name>.py): bump it there when
# the computation behind the metric changes in a way that moves its numbers.
PER_IMAGE_SEED = "eval.seed * 1000003 + index"


def metric_versions(names: Optional[Iterable[str]] = None) -> dict[str, str]:
    """Name -> version and implementation of each registered metric (or of `names`)."""
    chosen = list_metrics() if names is None else [get_metric(n) for n in names]
    return {m.name: m.version_string() for m in chosen}


def per_image_seed(eval_seed: int, index: int) -> int:
    """The seed of image `index`: fixed, so a generated image never depends on batch layout."""
    return eval_seed * 1_000_003 + index


def build_protocol(*, num_images: int, generation_size: Optional[list[int]], eval_size: list[int],
                   image_resize: str, label_resize: str, fid_protocol: Optional[str],
                   fid_extractor_sha256: Optional[str], segmenter: Optional[str],
                   segmenter_sha256: Optional[str], seeds: dict[str, Any], wall_time_s: float,
                   metrics: Optional[Iterable[str]] = None, versions: Optional[dict[str, str]] = None,
                   **extra: Any) -> dict[str, Any]:
    """The "protocol" section of metrics.json (keys fixed by docs/ARCHITECTURE.md), plus extras.

    metric_versions lists the metrics the record holds: `versions` as given, else this code's
    versions of `metrics` (default: every registered metric)."""
    record = {
        "metric_versions": dict(versions) if versions is not None else metric_versions(metrics),
        "num_images": int(num_images),
        "generation_size": generation_size,
        "eval_size": eval_size,
        "image_resize": image_resize,
        "label_resize": label_resize,
        "fid_protocol": fid_protocol,
        "fid_extractor_sha256": fid_extractor_sha256,
        "segmenter": segmenter,
        "segmenter_sha256": segmenter_sha256,
        "seeds": seeds,
        "wall_time_s": float(wall_time_s),
    }
    record.update(extra)
    return record
