"""`evaluate_run` on a fake run directory: outputs, schema, resumability, seeds, caching.

The run holds only config.json; `load_generator` is monkeypatched to return a tiny
untrained generator. The FID network is the stub from conftest.py and the segmenter a
tiny TorchScript net with a sidecar, so the file runs in seconds.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from eval.harness import evaluate_run
from spade_bench.errors import ConfigError, EvalError
from spade_bench.metrics import list_metrics, metric_keys

RUN_KEYS = {"dir", "variant", "seed", "preset", "dataset", "config_hash", "generator_params",
            "discriminator_params", "perceptual", "steps", "ema", "hardware", "train_images_per_s",
            "train_peak_memory_gib", "provenance"}
PROTOCOL_KEYS = {"metric_versions", "num_images", "generation_size", "eval_size", "image_resize", "label_resize",
                 "fid_protocol", "fid_extractor_sha256", "segmenter", "segmenter_sha256", "seeds", "wall_time_s"}


class ColourSegmenter(nn.Module):
    """Fixed 1x1 convolution: logits for 10 classes from the colour."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 10, 1)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(10, 3, 1, 1, generator=generator))

    def forward(self, x):
        return self.conv(x)


@pytest.fixture
def user_segmenter(tmp_path):
    path = tmp_path / "colour_segmenter.pt"
    torch.jit.script(ColourSegmenter()).save(str(path))
    path.with_suffix(".json").write_text(json.dumps({"name": "colour-1x1", "mean": [0.5] * 3, "std": [0.5] * 3}))
    return f"eval.segmenter={path}"


def test_writes_images_features_counts_and_schema(tmp_path, make_run, stub_inception, user_segmenter):
    _, run = make_run()
    result = evaluate_run(run, device="cpu", overrides=[user_segmenter, "eval.kid_subset_size=3"], progress=False)
    out = run / "eval"
    for sub in ("images", "real", "labels"):
        assert sorted(p.name for p in (out / sub).glob("*.png")) == [f"{i:05d}.png" for i in range(4)]
    assert np.load(out / "fake_features.npy").shape == (4, 2048)
    with np.load(out / "per_image_counts.npz") as counts:
        assert counts["tp"].shape == (4, 10) and counts["valid"].tolist() == [64 * 64] * 4
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["schema"] == 1 and saved["checkpoint_step"] == 7
    assert set(saved["run"]) == RUN_KEYS and PROTOCOL_KEYS <= set(saved["protocol"])
    assert set(saved["metrics"]) == set(metric_keys())   # today's four are pinned in tests/spade_bench/metrics
    assert all(v is not None for v in saved["metrics"].values())
    assert set(saved["references"]) == {"real_val_miou", "real_val_pixel_accuracy", "fid_train_vs_val"}
    assert all(v is not None for v in saved["references"].values())
    assert saved["files"]["fake_features"] == "fake_features.npy"
    assert saved["files"]["per_image_counts"] == "per_image_counts.npz"
    assert saved["run"]["train_images_per_s"] == 12.5 and saved["run"]["train_peak_memory_gib"] == 0.25
    protocol = saved["protocol"]
    assert protocol["num_images"] == 4 and protocol["eval_size"] == [64, 64] == protocol["generation_size"]
    assert protocol["fid_protocol"] == "pytorch-fid" and protocol["segmenter"] == "colour-1x1"
    assert len(protocol["segmenter_sha256"]) == 64 and protocol["kid_subset_size"] == 3
    assert 0 <= saved["metrics"]["miou"] <= 100 and 0 <= saved["metrics"]["pixel_accuracy"] <= 100
    assert any("KID" in w for w in saved["warnings"])  # 4 images: FID is biased
    assert result["metrics"] == saved["metrics"]


def test_resume_generates_only_missing_images_with_the_same_pixels(tmp_path, make_run, stub_inception,
                                                                   user_segmenter):
    _, run = make_run()
    first = evaluate_run(run, device="cpu", overrides=[user_segmenter], progress=False)
    images = run / "eval" / "images"
    original = (images / "00002.png").read_bytes()
    kept_mtime = (images / "00001.png").stat().st_mtime_ns
    (images / "00002.png").unlink()
    second = evaluate_run(run, device="cpu", overrides=[user_segmenter], progress=False)
    assert second["protocol"]["timings"]["generated_images"] == 1
    assert (images / "00002.png").read_bytes() == original
    assert (images / "00001.png").stat().st_mtime_ns == kept_mtime
    assert second["metrics"] == first["metrics"]
    # Another eval seed changes the generation settings: everything is generated again.
    third = evaluate_run(run, metric="fid", device="cpu", overrides=["eval.seed=3"], progress=False)
    assert third["protocol"]["timings"]["generated_images"] == 4


def test_vae_images_do_not_depend_on_batch_layout(tmp_path, make_run, stub_inception):
    make_run("a", variant="spade-vae", extra=["encoder.ndf=8"])
    evaluate_run(tmp_path / "a", metric="fid", device="cpu", progress=False)
    make_run("b", variant="spade-vae", extra=["encoder.ndf=8"])
    result = evaluate_run(tmp_path / "b", metric="fid", device="cpu", overrides=["eval.batch_size=3"],
                          progress=False)
    assert result["protocol"]["vae_z"].startswith("prior")
    for i in range(4):
        assert (tmp_path / "a/eval/images" / f"{i:05d}.png").read_bytes() == \
            (tmp_path / "b/eval/images" / f"{i:05d}.png").read_bytes()


def test_real_statistics_are_shared_between_runs(tmp_path, make_run, stub_inception):
    make_run("a")
    first = evaluate_run(tmp_path / "a", metric="kid", device="cpu", progress=False)
    stats = first["files"]["real_stats"]
    mtime = __import__("os").stat(stats).st_mtime_ns
    make_run("b", variant="spade-gamma")
    second = evaluate_run(tmp_path / "b", metric="kid", device="cpu", progress=False)
    assert second["files"]["real_stats"] == stats and __import__("os").stat(stats).st_mtime_ns == mtime
    assert second["metrics"]["fid"] is None and second["metrics"]["kid"] is not None
    tf = evaluate_run(tmp_path / "b", metric="fid", device="cpu", overrides=["eval.fid_protocol=tf"],
                      progress=False)
    assert tf["files"]["real_stats"] != stats and "_tf_" in tf["files"]["real_stats"]
    assert tf["protocol"]["fid_protocol"] == "tf"


def test_missing_evaluator_names_the_training_command(tmp_path, make_run, monkeypatch):
    monkeypatch.setenv("SPADE_BENCH_CACHE", str(tmp_path / "empty-cache"))   # no default evaluator in it
    _, run = make_run()
    with pytest.raises(EvalError, match="spade-bench segmenter train --dataset synthetic --preset smoke"):
        evaluate_run(run, metric="miou", device="cpu", progress=False)
    assert not (run / "eval" / "images").exists()  # failed before generating anything


def test_only_eval_overrides_are_accepted(tmp_path, make_run):
    _, run = make_run()
    with pytest.raises(ConfigError, match="only takes eval"):
        evaluate_run(run, metric="fid", device="cpu", overrides=["generator.ngf=4"], progress=False)


def test_vae_with_encoder_samples_the_posterior_of_the_real_photo(tmp_path, make_run, monkeypatch, stub_inception):
    import spade_bench.checkpoint as checkpoint
    from spade_bench.encoders import build_encoder

    cfg, _ = make_run("a", variant="spade-vae", extra=["encoder.ndf=8"])
    make_run("b", variant="spade-vae", extra=["encoder.ndf=8"])
    torch.manual_seed(1)
    encoder = build_encoder(cfg).eval()
    plain = checkpoint.load_generator
    monkeypatch.setattr(checkpoint, "load_generator", lambda *a, **k: (*plain(*a, **k)[:2], encoder, 7))
    first = evaluate_run(tmp_path / "a", metric="fid", device="cpu", progress=False)
    evaluate_run(tmp_path / "b", metric="fid", device="cpu", overrides=["eval.batch_size=1"], progress=False)
    assert first["protocol"]["vae_z"].startswith("posterior")
    for i in range(4):
        assert (tmp_path / "a/eval/images" / f"{i:05d}.png").read_bytes() == \
            (tmp_path / "b/eval/images" / f"{i:05d}.png").read_bytes()


@pytest.fixture
def folder_root(tmp_path):
    """A tiny `folder` dataset: ROOT/{train,val}/{images,labels}, three 80x80 pairs each."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for sub in ("images", "labels"):
            (tmp_path / "data" / split / sub).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(
                tmp_path / "data" / split / "images" / f"{i}.png")
            label = np.zeros((80, 80), np.uint8)
            label[40:] = i + 1
            Image.fromarray(label).save(tmp_path / "data" / split / "labels" / f"{i}.png")
    return tmp_path / "data"


def _folder_run(make_run, root, name, *extra):
    return make_run(name, extra=["data.dataset=folder", f"data.root={root}", "data.max_val_images=3", *extra])[1]


def test_editing_a_val_photo_in_place_changes_fid(folder_root, make_run, stub_inception):
    from PIL import Image

    run = _folder_run(make_run, folder_root, "a")
    first = evaluate_run(run, metric="fid", device="cpu", progress=False)
    photo = folder_root / "val" / "images" / "1.png"
    Image.fromarray(np.full((80, 80, 3), 200, np.uint8)).save(photo)  # same name, same place
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        second = evaluate_run(run, metric="fid", device="cpu", progress=False)
    assert second["metrics"]["fid"] != first["metrics"]["fid"]
    assert second["files"]["real_stats"] != first["files"]["real_stats"]
    assert any("validation files" in str(w.message) for w in caught)  # the stored images were redone
    # The stored real image is the edited photo, not the old one.
    assert (torch.from_numpy(np.asarray(Image.open(run / "eval" / "real" / "00001.png"))) == 200).all()


def test_two_preprocessings_do_not_share_real_statistics(folder_root, make_run, stub_inception):
    fixed = evaluate_run(_folder_run(make_run, folder_root, "fixed", "data.preprocess=fixed"), metric="fid",
                         device="cpu", progress=False)
    stored = evaluate_run(_folder_run(make_run, folder_root, "none", "data.preprocess=none"), metric="fid",
                          device="cpu", progress=False)
    assert fixed["files"]["real_stats"] != stored["files"]["real_stats"]


class IgnoresLabels(nn.Module):
    """The same image whatever the label map (the degenerate case)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("image", torch.linspace(-0.8, 0.8, 3 * 64 * 64).reshape(1, 3, 64, 64))

    def forward(self, segmap, z=None):
        return self.image.expand(segmap.shape[0], -1, -1, -1)


class FollowsLabels(nn.Module):
    """A fixed colour per class: the output is a function of the label map."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("palette", torch.rand(channels, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1)

    def forward(self, segmap, z=None):
        return torch.einsum("bchw,cd->bdhw", segmap, self.palette)


@pytest.mark.parametrize("generator, degenerate", [("ignores", True), ("follows", False)])
def test_label_dependence_flags_a_generator_that_ignores_its_input(tmp_path, make_run, monkeypatch, stub_inception,
                                                                   generator, degenerate):
    import spade_bench.checkpoint as checkpoint
    from spade_bench.config import load_config_file

    cfg, run = make_run()
    network = IgnoresLabels() if generator == "ignores" else FollowsLabels(cfg.data.semantic_channels)
    monkeypatch.setattr(checkpoint, "load_generator",
                        lambda run_dir, *a, **k: (load_config_file(run / "config.json"), network, None, 7))
    result = evaluate_run(run, metric="fid", device="cpu", progress=False)
    dependence = json.loads((run / "eval" / "metrics.json").read_text())["label_dependence"]
    assert dependence == result["label_dependence"]
    assert set(dependence) == {"uniform_distinctness", "label_spread", "degenerate", "rule"}
    assert dependence["degenerate"] is degenerate and "label_spread <" in dependence["rule"]
    if degenerate:
        assert dependence["uniform_distinctness"] == 0.0 and dependence["label_spread"] == 0.0
    else:
        assert dependence["uniform_distinctness"] > 0.1 and dependence["label_spread"] > 0.01


def test_label_pngs_give_dont_care_the_palettes_dont_care_colour(tmp_path, make_run, stub_inception):
    """eval/labels/ used to draw don't-care black, which a 35-class palette also gives classes
    0-4; it is drawn as the training grids draw it (colorize_labels: its own colour)."""
    from PIL import Image

    from spade_bench.data import dataset_palette

    root = tmp_path / "dc_data"
    for split in ("train", "val"):
        for sub in ("images", "labels"):
            (root / split / sub).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((80, 80, 3), 40 * i, np.uint8)).save(root / split / "images" / f"{i}.png")
            label = np.full((80, 80), 10 + i, np.uint8)
            label[:40] = 255                                            # don't-care
            Image.fromarray(label).save(root / split / "labels" / f"{i}.png")
    cfg, run = make_run("dc", extra=["data.dataset=folder", f"data.root={root}", "data.max_val_images=3",
                                     "data.label_nc=35", "data.contain_dontcare=true", "data.dont_care_value=255"])
    evaluate_run(run, metric="fid", device="cpu", progress=False)
    dont_care = dataset_palette(cfg.data)[cfg.data.label_nc]
    assert tuple(dont_care) != (0, 0, 0)                               # black is classes 0-4 here
    drawn = np.asarray(Image.open(run / "eval" / "labels" / "00000.png").convert("RGB"))
    assert (drawn == dont_care).all(axis=-1).any()
    assert not (drawn == 0).all(axis=-1).any()


def test_a_kid_subset_size_too_large_for_the_sets_is_named_in_the_warnings(tmp_path, make_run, stub_inception):
    """4 images and eval.kid_subset_size=16 (the smoke preset): KID uses subsets of 2. That was
    recorded in protocol.kid_subset_size but not said; it is now an evaluator warning."""
    _, run = make_run()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate_run(run, metric="kid", device="cpu", progress=False)
    assert result["protocol"]["kid_subset_size"] == 2
    said = [w for w in result["warnings"] if "requested 16" in w]
    assert len(said) == 1 and "subsets of 2 images" in said[0]
    assert any("requested 16" in str(w.message) for w in caught)
    fitting = evaluate_run(run, metric="kid", device="cpu", overrides=["eval.kid_subset_size=3"], progress=False)
    assert not any("requested" in w for w in fitting["warnings"])


def test_scoring_some_metrics_keeps_the_others(tmp_path, make_run, stub_inception, user_segmenter):
    """`eval --metric fid` after `--metric all` used to write null for every other score (issue 21);
    the scores of the same images under the same protocol are kept, with their versions, files
    and references. A protocol change the new scores depend on drops the old ones it touches."""
    _, run = make_run()
    first = evaluate_run(run, device="cpu", overrides=[user_segmenter, "eval.kid_subset_size=3"], progress=False)
    before = json.loads((run / "eval" / "metrics.json").read_text())
    second = evaluate_run(run, metric="fid", device="cpu", progress=False)      # no segmenter needed now
    after = json.loads((run / "eval" / "metrics.json").read_text())
    assert after["metrics"] == before["metrics"] and all(v is not None for v in after["metrics"].values())
    for key in ("references", "per_class_iou", "files", "metric_warnings", "warnings"):
        assert after[key] == before[key], key
    for key in ("metric_versions", "segmenter", "segmenter_sha256", "kid_subset_size", "kid_subsets", "fid_protocol"):
        assert after["protocol"][key] == before["protocol"][key], key
    assert after["protocol"]["metric"] == "fid" and second["metrics"] == after["metrics"]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tf = evaluate_run(run, metric="fid", device="cpu", overrides=["eval.fid_protocol=tf"], progress=False)
    feature_metrics = [m.name for m in list_metrics() if m.inputs == "features" and m.name != "fid"]
    assert all(tf["metrics"][name] is None for name in feature_metrics) and tf["metrics"]["kid_std"] is None
    assert tf["metrics"]["miou"] == first["metrics"]["miou"] and tf["metrics"]["fid"] != first["metrics"]["fid"]
    assert set(tf["protocol"]["metric_versions"]) == {"fid", "miou", "pixel_accuracy"}
    assert tf["protocol"]["fid_protocol"] == "tf" and tf["protocol"]["segmenter"] == "colour-1x1"
    assert tf["protocol"]["kid_subsets"] is None and tf["per_class_iou"] == first["per_class_iou"]
    dropped = [str(w.message) for w in caught if "from the earlier" in str(w.message)]
    assert len(dropped) == 1 and all(name in dropped[0] for name in feature_metrics)
    assert "fid_protocol" in dropped[0] and f"--metric {','.join(feature_metrics)}" in dropped[0]

    # Other generation settings make new images: nothing earlier is kept.
    third = evaluate_run(run, metric="kid", device="cpu", overrides=["eval.seed=3"], progress=False)
    assert third["metrics"]["miou"] is None and third["metrics"]["fid"] is None
    assert set(third["protocol"]["metric_versions"]) == {"kid"} and third["per_class_iou"] == {}
    assert third["files"]["per_image_counts"] is None


def test_eval_of_a_run_being_scored_is_refused(tmp_path, make_run):
    """Issue 21: a second evaluation of one run scored a mixture of both's images. RUN/eval/.lock
    (spade_bench.locks) refuses it, naming the holder, before any image is generated."""
    import json
    import socket
    import subprocess
    import sys

    from spade_bench.errors import LockError

    _, run = make_run()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (run / "eval").mkdir()
        (run / "eval" / ".lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                         "started": "now", "command": "spade-bench eval"}))
        with pytest.raises(LockError, match=rf"evaluation folder is locked by pid {holder.pid}"):
            evaluate_run(run, metric="fid", device="cpu", progress=False)
        assert sorted(p.name for p in (run / "eval").iterdir()) == [".lock"]   # no image generated
    finally:
        holder.kill()
        holder.wait()
