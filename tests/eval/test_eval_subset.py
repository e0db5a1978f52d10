"""The harness scores an evenly spaced subset of the validation list, records which files
(metrics.json eval_subset) and warns when they look like consecutive frames."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from eval.harness import evaluate_run
from spade_bench.data import generate_scene
from spade_bench.data.subset import evenly_spaced, subset_sha256


def _folder(root, frames: list[np.ndarray]):
    """ROOT/{train,val}/{images,labels}: the given val frames (frame_000, ...), 4 train photos."""
    rng = np.random.default_rng(0)
    train = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(4)]
    for split, photos in (("train", train), ("val", frames)):
        for sub in ("images", "labels"):
            (root / split / sub).mkdir(parents=True)
        for i, photo in enumerate(photos):
            Image.fromarray(photo).save(root / split / "images" / f"frame_{i:03d}.png")
            label = np.zeros((64, 64), np.uint8)
            label[32:] = 1 + i % 3
            Image.fromarray(label).save(root / split / "labels" / f"frame_{i:03d}.png")
    return root


def _video(frames: int) -> list[np.ndarray]:
    """A camera panning over one scene, 2 px a frame."""
    panorama = generate_scene(0, "train", 0, (64, 64 + 2 * frames)).image
    return [np.ascontiguousarray(panorama[:, 2 * k:2 * k + 64]) for k in range(frames)]


def _evaluate(make_run, root, name, *extra):
    run = make_run(name, extra=["data.dataset=folder", f"data.root={root}", "data.load_size=64",
                                "data.max_val_images=8", *extra])[1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate_run(run, metric="fid", device="cpu", progress=False)
    return result, [str(w.message) for w in caught]


def test_consecutive_frames_are_recorded_and_warned(tmp_path, make_run, stub_inception):
    root = _folder(tmp_path / "data-video", _video(20))
    result, caught = _evaluate(make_run, root, "video")
    subset = result["eval_subset"]
    names = [f"val/images/frame_{i:03d}.png" for i in range(20)]
    assert subset["files"] == [names[i] for i in evenly_spaced(8, 20)]          # spans frame 0 to 19
    assert subset["files"][0].endswith("frame_000.png") and subset["files"][-1].endswith("frame_019.png")
    assert (subset["count"], subset["listed"]) == (8, 20)
    assert subset["sha256"] == subset_sha256(subset["files"]) == result["protocol"]["eval_subset_sha256"]
    assert "evenly spaced" in subset["rule"] and "val/ folder" in subset["split"]
    assert subset["neighbours"]["consecutive"] is True
    assert any("look like consecutive frames" in w for w in result["warnings"])
    assert any("look like consecutive frames" in w for w in caught)


def test_independent_photos_are_not_warned(tmp_path, make_run, stub_inception):
    frames = [generate_scene(0, "val", i, (64, 64)).image for i in range(20)]
    result, caught = _evaluate(make_run, _folder(tmp_path / "data-photos", frames), "photos")
    assert result["eval_subset"]["neighbours"]["consecutive"] is False
    assert not any("consecutive frames" in w for w in result["warnings"] + caught)


def test_num_images_takes_the_same_rule_over_the_whole_list(tmp_path, make_run, stub_inception):
    """eval.num_images below data.max_val_images: evenly spaced over all 20, not over the 8."""
    root = _folder(tmp_path / "data-video", _video(20))
    result, _ = _evaluate(make_run, root, "fewer", "eval.num_images=4")
    assert result["eval_subset"]["files"] == [f"val/images/frame_{i:03d}.png" for i in evenly_spaced(4, 20)]
    assert result["protocol"]["num_images"] == 4 and result["eval_subset"]["neighbours"]["ratio"] is None
