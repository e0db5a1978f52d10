"""Issue 21, cause "the CLI converts only the project's own error class": one error boundary turns
every expected failure (a full or read-only disk, a path under a file, a decompression-bomb image, a
bad device) into one line naming the file or value and the fix, exit code 2, no traceback, no output
written; `--debug` keeps the traceback."""
from __future__ import annotations

import errno
import os

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cli import app

runner = CliRunner()
TINY = ["--preset", "smoke", "--set", "generator.ngf=8", "--set", "train.steps=2", "--set", "train.decay_steps=1",
        "--set", "loss.perceptual=none", "--set", "data.synthetic_train_size=4", "--set", "data.synthetic_val_size=2",
        "--set", "data.crop_size=32", "--set", "data.load_size=32"]


def _one_error_line(result, *needles: str) -> str:
    """The failure is exit 2 with exactly one `error: ...` line on stderr, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _disk_full(monkeypatch):
    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", no_space)   # every atomic write fsyncs before its rename


def test_full_disk_during_train_is_one_line(tmp_path, monkeypatch):
    _disk_full(monkeypatch)
    result = runner.invoke(app, ["train", *TINY, "--out", str(tmp_path / "run")])
    _one_error_line(result, "no space left", str(tmp_path / "run"))


def test_debug_keeps_the_traceback(tmp_path, monkeypatch):
    _disk_full(monkeypatch)
    result = runner.invoke(app, ["--debug", "train", *TINY, "--out", str(tmp_path / "run")])
    assert isinstance(result.exception, OSError) and result.exception.errno == errno.ENOSPC
    assert not isinstance(result.exception, SystemExit)


def test_a_read_only_report_folder_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "spade-s0"
    run.mkdir(parents=True)
    (run / "train_summary.json").write_text('{"status": "failed", "error": "x"}')
    import tempfile

    real_mkstemp = tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):
        if dir is not None and str(dir).startswith(str(tmp_path / "reports")):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    result = runner.invoke(app, ["report", str(tmp_path / "runs"), "--out", str(tmp_path / "reports" / "r")])
    _one_error_line(result, str(tmp_path / "reports"), "not writable")
    assert not (tmp_path / "reports" / "r").exists()


def test_a_decompression_bomb_in_eval_folders_is_one_line(tmp_path, monkeypatch):
    for name in ("real", "fake"):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(tmp_path / name / f"{i}.png")
    # PIL refuses images over twice MAX_IMAGE_PIXELS: shrink the limit instead of writing a huge file.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    result = runner.invoke(app, ["eval", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"),
                                 "--metric", "fid", "--device", "cpu"])
    _one_error_line(result, str(tmp_path / "real" / "0.png"), "decompression bomb")


def test_data_synth_under_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    result = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "file" / "scenes"), "--n", "1",
                                 "--size", "32"])
    _one_error_line(result, str(tmp_path / "file"))


def test_segmenter_out_that_cannot_be_written_fails_before_training(tmp_path, monkeypatch):
    """At 6b04d6e the segmenter trained in full and then failed at its final save."""
    (tmp_path / "file").write_text("not a folder")

    def no_training(*args, **kwargs):
        raise AssertionError("training started before the output folder was checked")

    monkeypatch.setattr("eval.segmenter.build_dataset", no_training)
    result = runner.invoke(app, ["segmenter", "train", "--dataset", "synthetic", "--preset", "smoke", "--steps", "1",
                                 "--device", "cpu", "--out", str(tmp_path / "file" / "seg.pt")])
    _one_error_line(result, str(tmp_path / "file"))


@pytest.mark.parametrize("command", [["eval", "--real", ".", "--fake", "."], ["bench", "--steps", "1"]])
def test_an_unknown_device_is_one_line(command):
    result = runner.invoke(app, [*command, "--device", "tpu"])
    _one_error_line(result, "'tpu'", "cpu")


def test_a_bug_keeps_its_traceback(monkeypatch):
    """Only expected failures become one line: anything else is a bug, and must stay visible."""
    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("cli.resolve", bug)
    result = runner.invoke(app, ["config"])
    assert isinstance(result.exception, ZeroDivisionError)


def test_full_disk_during_report_is_one_line_and_keeps_the_old_report(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "spade-s0"
    run.mkdir(parents=True)
    (run / "train_summary.json").write_text('{"status": "failed", "error": "x"}')
    out = tmp_path / "reports" / "r"
    first = runner.invoke(app, ["report", str(tmp_path / "runs"), "--out", str(out)])
    assert first.exit_code == 0, first.output
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    _disk_full(monkeypatch)
    result = runner.invoke(app, ["report", str(tmp_path / "runs"), "--out", str(out)])
    _one_error_line(result, "no space left", str(tmp_path / "reports"))
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
