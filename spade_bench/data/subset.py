"""Which validation images are scored (the one subset rule), and whether they look like
consecutive frames of a video.

Every place that takes fewer images than a list holds uses `evenly_spaced`: data.max_val_images
(build_dataset), eval.num_images and the label-dependence maps (eval/harness.py), the real
training photos of the FID floor and the test photos (eval/harness.py), the segmenter's own
ceiling (eval/segmenter.py).

Why evenly spaced, not seeded random. The lists are in file-name order, and that order
carries structure: time in a video (CamVid's validation split is a few drives, frame by
frame), the photographer or city in CMP Facades (KID between b0001-0100 and b0101-0200 is
0.106, against about 0.00 for random halves). Evenly spaced indices
- span the whole list by construction (its first and last entries are always in), and no two
  scored images are closer in the list than size // count - 1 entries, whereas 32 random of
  101 frames put about ten pairs of adjacent frames in the sample;
- stratify over the order: under a trend along the list, or a correlation that decays with
  the distance in the list, a systematic sample's mean varies no more than a random
  sample's (Cochran, Sampling Techniques, 3rd ed., chapter 8);
- follow from the list alone: no seed to choose, record or forget.
Its known weakness is a list whose structure repeats with a period that divides the stride
(two cameras interleaved, say): then it picks one phase. `neighbour_similarity` does not
detect that; it detects the common failure, scored images that are near-duplicates of their
neighbours.
"""
from __future__ import annotations

import hashlib
from typing import Any, Sequence

import numpy as np

SUBSET_RULE = ("evenly spaced over the split's list in file-name order: index round(i (M - 1) / (n - 1)), "
               "i = 0..n-1, of M listed (all of them when n >= M)")

# The consecutive-frames check: scored photos are compared as 16x16 area-averaged thumbnails
# (a few pixels of camera motion barely move them), by mean absolute difference in [0, 1].
NEIGHBOUR_THUMBNAIL = 16
# Warn when neighbouring photos (in the scored order, which is file-name order) differ by less
# than this share of what other pairs differ by. Independent photos give about 1 (neighbours
# are random pairs). Measured on the procedural scenes at 64 px, 300 draws each: independent
# scenes never went below 0.66 (6 photos), 0.69 (8) or 0.85 (32); the synthetic video of
# tests/spade_bench/data/test_subset.py (crops of one scene shifted 2 px a frame) gives
# 0.46-0.53 at 8 frames and 0.27-0.35 at 32.
CONSECUTIVE_RATIO = 0.6
# Fewer scored photos than this: no check (too few pairs for two medians).
NEIGHBOUR_MIN_IMAGES = 6
# Above this many photos the random pairs are a fixed sample of this many pairs, not all.
_MAX_REFERENCE_PAIRS = 50_000


def evenly_spaced(count: int | None, size: int) -> list[int]:
    """min(count, size) indices into a list of `size`, evenly spaced from the first to the last
    (all of them when count is None or >= size). Increasing and distinct."""
    if count is None or count >= size:
        return list(range(size))
    if count <= 0:
        return []
    if count == 1:
        return [0]
    return np.linspace(0, size - 1, count).round().astype(int).tolist()


def subset_sha256(names: Sequence[str]) -> str:
    """sha256 of the scored names, in order (one per line): the subset's identity in metrics.json."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def subset_record(names: Sequence[str], listed: int, split: str) -> dict[str, Any]:
    """metrics.json `eval_subset` without the neighbour check: which files were scored and why."""
    return {"rule": SUBSET_RULE, "split": split, "listed": int(listed), "count": len(names),
            "files": list(names), "sha256": subset_sha256(names)}


def neighbour_similarity(thumbnails: np.ndarray) -> dict[str, Any]:
    """Do neighbouring scored photos look like consecutive frames?

    thumbnails: [N, ...] the scored real photos, in the scored order, as floats in [0, 1]
    (NEIGHBOUR_THUMBNAIL px a side). Distances are mean absolute differences. The statistic is
    ratio = median distance between neighbours (i, i + 1) / median distance between pairs that
    are not neighbours (all of them, or a fixed sample of _MAX_REFERENCE_PAIRS); `consecutive`
    when ratio < CONSECUTIVE_RATIO. None values with fewer than NEIGHBOUR_MIN_IMAGES photos.
    """
    flat = np.asarray(thumbnails, dtype=np.float64).reshape(len(thumbnails), -1)
    n = flat.shape[0]
    rule = (f"consecutive when the median mean-absolute difference between neighbouring scored photos "
            f"(file-name order; {NEIGHBOUR_THUMBNAIL}x{NEIGHBOUR_THUMBNAIL} thumbnails) is below "
            f"{CONSECUTIVE_RATIO} x the median over non-neighbouring pairs")
    record: dict[str, Any] = {"neighbour_median": None, "random_median": None, "ratio": None,
                              "threshold": CONSECUTIVE_RATIO, "consecutive": None, "rule": rule}
    if n < NEIGHBOUR_MIN_IMAGES:
        return record
    neighbours = np.abs(flat[1:] - flat[:-1]).mean(axis=1)
    i, j = np.triu_indices(n, k=2)
    if len(i) > _MAX_REFERENCE_PAIRS:
        pick = np.random.default_rng(0).choice(len(i), _MAX_REFERENCE_PAIRS, replace=False)
        i, j = i[pick], j[pick]
    others = np.concatenate([np.abs(flat[i[s:s + 4096]] - flat[j[s:s + 4096]]).mean(axis=1)
                             for s in range(0, len(i), 4096)])
    near, far = float(np.median(neighbours)), float(np.median(others))
    ratio = near / far if far > 0 else None
    record.update(neighbour_median=near, random_median=far, ratio=ratio,
                  consecutive=None if ratio is None else bool(ratio < CONSECUTIVE_RATIO))
    return record


def consecutive_warning(check: dict[str, Any], count: int) -> str:
    """The metrics.json warning for a subset whose neighbours look like consecutive frames."""
    return (f"the {count} scored validation photos look like consecutive frames: neighbouring photos differ "
            f"by {check['neighbour_median']:.4f}, other pairs by {check['random_median']:.4f} (ratio "
            f"{check['ratio']:.2f} < {check['threshold']}), so they are not independent samples and the "
            f"report's intervals, which treat them as independent, are too narrow; score frames further "
            f"apart (fewer frames from more sequences: a lower data.max_val_images spaces them out)")
