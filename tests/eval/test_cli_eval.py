"""The eval, synth and segmenter commands through `from cli import app`, bad input included:
each failure is one clear line and a non-zero exit."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def _write_images(folder, count, size=(32, 32), seed=0, sizes=None):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        h, w = sizes[i] if sizes else size
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def test_folders_fid_and_kid(tmp_path, stub_inception):
    real = _write_images(tmp_path / "real", 6, seed=0)
    fake = _write_images(tmp_path / "fake", 5, seed=1)
    result = runner.invoke(app, ["eval", "--real", str(real), "--fake", str(fake), "--metric", "all",
                                 "--device", "cpu", "--set", "eval.kid_subsets=5"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["metrics"]["fid"] > 0 and payload["metrics"]["kid"] is not None
    # The default subset size (1000) exceeds the 5 generated images: subsets of half of them.
    assert payload["protocol"]["fid_protocol"] == "pytorch-fid" and payload["protocol"]["kid_subset_size"] == 2
    assert payload["protocol"]["kid_subsets"] == 5 and payload["metrics"]["kid_std"] > 0
    # Fewer images than the 2048 feature dimensions: FID is biased, KID is the one to trust.
    assert "biased" in result.stderr and "KID" in result.stderr


def test_folder_without_images_fails_clearly(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    real = _write_images(tmp_path / "real", 3)
    result = runner.invoke(app, ["eval", "--real", str(real), "--fake", str(empty), "--device", "cpu"])
    assert result.exit_code != 0
    assert "no images in" in result.stderr and str(empty) in result.stderr
    missing = runner.invoke(app, ["eval", "--real", str(tmp_path / "nope"), "--fake", str(real)])
    assert missing.exit_code != 0 and "does not exist" in missing.stderr


def test_mixed_sizes_are_resized_to_the_first_with_a_warning(tmp_path, stub_inception):
    real = _write_images(tmp_path / "real", 4, sizes=[(32, 32), (32, 32), (40, 24), (32, 32)])
    fake = _write_images(tmp_path / "fake", 4, seed=3)
    result = runner.invoke(app, ["eval", "--real", str(real), "--fake", str(fake), "--metric", "fid",
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "1 of 4 images" in result.stderr and "resized" in result.stderr and "002.png" in result.stderr


def test_single_image_folder_is_refused(tmp_path):
    real = _write_images(tmp_path / "real", 1)
    fake = _write_images(tmp_path / "fake", 3)
    result = runner.invoke(app, ["eval", "--real", str(real), "--fake", str(fake), "--metric", "kid"])
    assert result.exit_code != 0 and "at least 2" in result.stderr


def test_eval_argument_combinations(tmp_path):
    real = _write_images(tmp_path / "real", 2)
    only_real = runner.invoke(app, ["eval", "--real", str(real)])
    assert only_real.exit_code != 0 and "--fake" in only_real.stderr
    both = runner.invoke(app, ["eval", "--run", str(tmp_path), "--real", str(real), "--fake", str(real)])
    assert both.exit_code != 0 and "not both" in both.stderr
    segmentation = runner.invoke(app, ["eval", "--real", str(real), "--fake", str(real), "--metric", "miou"])
    assert segmentation.exit_code != 0 and "needs a run" in segmentation.stderr


def test_missing_evaluator_checkpoint(tmp_path, make_run):
    _, run = make_run()
    result = runner.invoke(app, ["eval", "--run", str(run), "--metric", "miou", "--device", "cpu"])
    assert result.exit_code != 0
    assert "spade-bench segmenter train --dataset synthetic --preset smoke" in result.stderr
    assert "eval.segmenter=PATH" in result.stderr
    explicit = runner.invoke(app, ["eval", "--run", str(run), "--metric", "acc", "--device", "cpu",
                                   "--set", f"eval.segmenter={tmp_path / 'missing.pt'}"])
    assert explicit.exit_code != 0 and "missing.pt" in explicit.stderr


def test_eval_run_prints_scores_and_writes_metrics(tmp_path, make_run, stub_inception):
    _, run = make_run()
    result = runner.invoke(app, ["eval", "--run", str(run), "--metric", "fid", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "fid:" in result.stdout and "metrics.json" in result.stdout
    assert (run / "eval" / "metrics.json").is_file()


def test_not_a_run_directory(tmp_path):
    result = runner.invoke(app, ["eval", "--run", str(tmp_path), "--device", "cpu"])
    assert result.exit_code != 0 and "not a run directory" in result.stderr


def test_synth_renders_a_label_map_and_refuses_style_without_vae(tmp_path, make_run):
    cfg, run = make_run()
    label = np.zeros((48, 48), np.uint8)
    label[24:] = 3
    Image.fromarray(label).save(tmp_path / "label.png")
    out = tmp_path / "out.png"
    result = runner.invoke(app, ["synth", "--run", str(run), "--label", str(tmp_path / "label.png"),
                                 "--out", str(out), "--seed", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (64, 64)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "style.jpg")
    styled = runner.invoke(app, ["synth", "--run", str(run), "--label", str(tmp_path / "label.png"),
                                 "--style", str(tmp_path / "style.jpg"), "--out", str(out), "--device", "cpu"])
    assert styled.exit_code != 0 and "--style needs" in styled.stderr and "spade-vae" in styled.stderr


def test_synth_with_style_on_a_vae_run(tmp_path, monkeypatch, make_run):
    from spade_bench.encoders import build_encoder

    cfg, run = make_run(variant="spade-vae", extra=["encoder.ndf=8"])
    import spade_bench.checkpoint as checkpoint

    plain = checkpoint.load_generator
    encoder = build_encoder(cfg).eval()
    monkeypatch.setattr(checkpoint, "load_generator",
                        lambda *a, **k: (*plain(*a, **k)[:2], encoder, 7))
    Image.fromarray(np.full((64, 64), 2, np.uint8)).save(tmp_path / "label.png")
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / f"{name}.jpg")
    outputs = []
    for style in ("a", "a", "b"):
        out = tmp_path / f"out_{len(outputs)}.png"
        result = runner.invoke(app, ["synth", "--run", str(run), "--label", str(tmp_path / "label.png"),
                                     "--style", str(tmp_path / f"{style}.jpg"), "--out", str(out), "--device", "cpu"])
        assert result.exit_code == 0, result.output
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]  # same style, same seed: same image
    assert outputs[0] != outputs[2]


def test_segmenter_train_command(tmp_path):
    bad = runner.invoke(app, ["segmenter", "train", "--dataset", "synthetic", "--steps", "0"])
    assert bad.exit_code != 0 and "--steps must be >= 1" in bad.stderr
    out = tmp_path / "seg.pt"
    result = runner.invoke(app, ["segmenter", "train", "--dataset", "synthetic", "--preset", "smoke", "--steps", "1",
                                 "--batch-size", "2", "--device", "cpu", "--out", str(out),
                                 "--set", "data.synthetic_train_size=4", "--set", "data.max_val_images=2"])
    assert result.exit_code == 0, result.output
    assert out.is_file() and "real val (2 images): mIoU" in result.stdout and "sha256:" in result.stdout


def test_folders_of_different_sizes_are_refused_unless_resized(tmp_path, stub_inception):
    real = _write_images(tmp_path / "real", 4, size=(32, 32))
    fake = _write_images(tmp_path / "fake", 4, size=(16, 16), seed=1)
    refused = runner.invoke(app, ["eval", "--real", str(real), "--fake", str(fake), "--metric", "fid",
                                  "--device", "cpu"])
    assert refused.exit_code != 0
    assert "32x32" in refused.stderr and "16x16" in refused.stderr and "--resize-to 16x16" in refused.stderr
    resized = runner.invoke(app, ["eval", "--real", str(real), "--fake", str(fake), "--metric", "fid",
                                  "--device", "cpu", "--resize-to", "16x16"])
    assert resized.exit_code == 0, resized.output
    payload = json.loads(resized.stdout)
    assert payload["protocol"]["eval_size"] == [[16, 16], [16, 16]]
    assert "16x16 (--resize-to)" in payload["protocol"]["image_resize"] and payload["metrics"]["fid"] > 0
    bad = runner.invoke(app, ["eval", "--real", str(real), "--fake", str(fake), "--resize-to", "16"])
    assert bad.exit_code != 0 and "HEIGHTxWIDTH" in bad.stderr


def test_eval_of_one_metric_merges_into_metrics_json(tmp_path, make_run, stub_inception):
    """issue 21: `eval --metric X` after another evaluation nulled the other scores in metrics.json."""
    _, run = make_run()
    first = runner.invoke(app, ["eval", "--run", str(run), "--metric", "fid", "--device", "cpu"])
    assert first.exit_code == 0, first.output
    before = json.loads((run / "eval" / "metrics.json").read_text())["metrics"]
    added = runner.invoke(app, ["eval", "--run", str(run), "--metric", "kid", "--device", "cpu",
                                "--set", "eval.kid_subset_size=3"])
    assert added.exit_code == 0, added.output
    saved = json.loads((run / "eval" / "metrics.json").read_text())
    assert saved["metrics"]["fid"] == before["fid"] is not None
    assert saved["metrics"]["kid"] is not None and saved["metrics"]["miou"] is None
    assert set(saved["protocol"]["metric_versions"]) == {"fid", "kid"}
    assert "kid:" in added.stdout and "fid:" in added.stdout


def test_full_disk_during_eval_is_one_line_naming_the_file(tmp_path, make_run, stub_inception, monkeypatch):
    """issue 21: a full disk in `eval` was a traceback. Every atomic write names its file, and the
    CLI's one error boundary shows it with the fix."""
    import errno
    import os

    _, run = make_run()

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    result = runner.invoke(app, ["eval", "--run", str(run), "--metric", "fid", "--device", "cpu"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and str(run / "eval") in lines[0] and "no space left" in lines[0]
    assert not (run / "eval" / "metrics.json").exists()


def test_segmenter_train_saves_where_runs_of_its_steps_look(tmp_path, monkeypatch):
    monkeypatch.setenv("SPADE_BENCH_CACHE", str(tmp_path / "cache"))
    from eval.segmenter import run_segmenter_path
    from spade_bench.config import resolve

    args = ["--set", "data.synthetic_train_size=4", "--set", "data.max_val_images=2"]
    result = runner.invoke(app, ["segmenter", "train", "--dataset", "synthetic", "--preset", "smoke", "--steps", "2",
                                 "--batch-size", "2", "--device", "cpu", *args])
    assert result.exit_code == 0, result.output
    assert "--set eval.segmenter_steps=2" in result.stdout
    two = resolve("spade", preset="smoke", overrides=["data.synthetic_train_size=4", "data.max_val_images=2",
                                                      "eval.segmenter_steps=2"])
    default = resolve("spade", preset="smoke", overrides=["data.synthetic_train_size=4", "data.max_val_images=2"])
    assert run_segmenter_path(two).is_file() and not run_segmenter_path(default).is_file()
