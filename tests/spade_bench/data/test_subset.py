"""The one subset rule (evenly spaced over the whole list) and the consecutive-frames check."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from spade_bench.config import DataConfig
from spade_bench.data import build_dataset, generate_scene
from spade_bench.data.subset import (CONSECUTIVE_RATIO, NEIGHBOUR_MIN_IMAGES, NEIGHBOUR_THUMBNAIL, evenly_spaced,
                                     neighbour_similarity, subset_record, subset_sha256)


@pytest.mark.parametrize("count,size", [(1, 5), (2, 5), (3, 7), (32, 101), (32, 78), (77, 78), (5, 5), (9, 5)])
def test_evenly_spaced_spans_the_whole_list(count, size):
    picked = evenly_spaced(count, size)
    assert len(picked) == min(count, size)
    assert picked == sorted(set(picked))                      # increasing, distinct
    assert picked[0] == 0 and 0 <= picked[-1] <= size - 1
    if count >= 2:
        assert picked[-1] == size - 1                         # the last entry is always in
        gaps = np.diff(picked)
        # No two picks closer than the stride allows, none further apart than one stride + 1.
        assert gaps.min() >= (size - 1) // (min(count, size) - 1)
        assert gaps.max() <= -(-(size - 1) // (min(count, size) - 1)) + 1


def test_evenly_spaced_keeps_all_or_nothing():
    assert evenly_spaced(None, 4) == [0, 1, 2, 3]
    assert evenly_spaced(0, 4) == []
    # The first N would be 0..3; the rule reaches the end of the list.
    assert evenly_spaced(4, 100) == [0, 33, 66, 99]


def _folder(root, names):
    for split in ("train", "val"):
        for sub in ("images", "labels"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in names:
            photo = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(photo).save(root / split / "images" / f"{name}.png")
            Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / split / "labels" / f"{name}.png")
    return root


def test_max_val_images_spans_the_whole_validation_set(tmp_path):
    """A video-like val list (frame_000 .. frame_039): 8 kept items reach from the first frame to
    the last, five frames apart, instead of frames 0-7."""
    names = [f"frame_{i:03d}" for i in range(40)]
    data = DataConfig(dataset="folder", root=str(_folder(tmp_path, names)), label_nc=2, load_size=16,
                      crop_size=16, num_workers=0, max_val_images=8)
    val = build_dataset(data, "val")
    assert val.listed == 40 and len(val) == 8
    assert val.names() == [f"val/images/{names[i]}.png" for i in (0, 6, 11, 17, 22, 28, 33, 39)]
    assert val[7]["path"].endswith("frame_039.png") and val[7]["index"] == 7
    # Train is never subsampled.
    assert len(build_dataset(data, "train")) == 40


def test_synthetic_subset_holds_the_chosen_scenes():
    data = DataConfig(load_size=32, crop_size=32, synthetic_val_size=20, max_val_images=5, num_workers=0)
    val = build_dataset(data, "val")
    assert (len(val), val.listed) == (5, 20)
    assert val.names() == [f"synthetic/val/{i}" for i in (0, 5, 10, 14, 19)]
    full = build_dataset(replace(data, max_val_images=None), "val")
    assert torch.equal(val[4]["image"], full[19]["image"]) and val[4]["path"] == "synthetic/val/19"
    with pytest.raises(IndexError):
        val[5]


def test_subset_record_names_and_hashes_the_files():
    record = subset_record(["a", "b"], 10, "a split rule")
    assert record["files"] == ["a", "b"] and record["count"] == 2 and record["listed"] == 10
    assert record["sha256"] == subset_sha256(["a", "b"]) != subset_sha256(["b", "a"])
    assert record["split"] == "a split rule" and "evenly spaced" in record["rule"]


# ----------------------------------------------------------------------------- consecutive frames

def _thumbnails(images: list[np.ndarray]) -> np.ndarray:
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    return F.adaptive_avg_pool2d(batch, NEIGHBOUR_THUMBNAIL).numpy()


def _video(frames: int, shift: int, seed: int = 0) -> list[np.ndarray]:
    """A camera panning over one scene: 64x64 crops shifted `shift` px a frame."""
    panorama = generate_scene(seed, "train", 0, (64, 64 + shift * frames)).image
    return [panorama[:, k * shift:k * shift + 64] for k in range(frames)]


@pytest.mark.parametrize("frames", [8, 32])
def test_a_video_of_shifted_crops_is_flagged(frames):
    check = neighbour_similarity(_thumbnails(_video(frames, shift=2)))
    assert check["consecutive"] is True and check["ratio"] < CONSECUTIVE_RATIO
    assert check["neighbour_median"] < check["random_median"]


@pytest.mark.parametrize("count", [8, 32])
def test_independent_scenes_are_not_flagged(count):
    for seed in range(3):
        check = neighbour_similarity(_thumbnails([generate_scene(seed, "val", i, (64, 64)).image
                                                  for i in range(count)]))
        assert check["consecutive"] is False and check["ratio"] > CONSECUTIVE_RATIO


def test_the_same_frames_shuffled_are_not_flagged():
    """The statistic measures order: the video's frames in a random order look independent."""
    frames = _video(32, shift=2)
    order = np.random.default_rng(0).permutation(len(frames))
    check = neighbour_similarity(_thumbnails([frames[i] for i in order]))
    assert check["consecutive"] is False


def test_too_few_photos_are_not_checked():
    check = neighbour_similarity(_thumbnails(_video(NEIGHBOUR_MIN_IMAGES - 1, shift=2)))
    assert check["ratio"] is None and check["consecutive"] is None and "median" in check["rule"]
