"""`data check` answers for the whole dataset first (issue 23): the verdict, the complete train
command with where each value came from, then the named class histogram and the sizes, then
the per-file problems as a count by kind with a few examples (`--verbose`: all of them)."""
from __future__ import annotations

import shlex

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from cli import app
from own_data import LABEL_NC, VOID, make_folder_dataset
from spade_bench.config import resolve
from spade_bench.data import check_dataset

runner = CliRunner()


def check(*args: str):
    return runner.invoke(app, ["data", "check", "--dataset", "folder", *args])


def camvid_like(tmp_path, **kwargs):
    """11 classes and void 11 named in label_names.txt, 4:3 photos (96x72)."""
    root = make_folder_dataset(tmp_path / "camvid", size=(96, 72), **kwargs)
    (root / "label_names.txt").write_text("".join(f"{i} class{i}\n" for i in range(LABEL_NC)) + f"{VOID} void\n")
    return root


def lines_of(result) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.strip()]


def test_the_dataset_wide_answer_comes_first_and_per_file_problems_last(tmp_path):
    root = camvid_like(tmp_path, n_train=6, n_val=2)
    result = check("--root", str(root))
    assert result.exit_code != 0
    lines = lines_of(result)
    assert lines[0].startswith(f"dataset folder at {root}: 8 pairs (train 6, val 2)")
    assert lines[1].startswith("verdict: not ready with these flags: 8 label maps with values outside the class range")
    assert lines[1].endswith("the command below fixes every one of them")
    assert lines[2] == (f"train with: spade-bench train --dataset folder --root {root} --label-nc {LABEL_NC} "
                        f"--dont-care {VOID} --set data.aspect_ratio=1.333")
    why = {line.split(":")[0].strip(): line for line in lines[3:6]}
    assert f"label_names.txt calls {VOID} 'void'" in why[f"--dont-care {VOID}"]
    assert f"class values 0..{LABEL_NC - 1}" in why[f"--label-nc {LABEL_NC}"]
    assert "96x72 (W x H), 8 of 8 pairs" in why["--set data.aspect_ratio=1.333"]
    order = [next(i for i, line in enumerate(lines) if line.startswith(start))
             for start in ("train with:", "class histogram", "image sizes (W x H): 96x72", "8 problem(s) in 1 kind")]
    assert order == sorted(order)
    # The histogram reads the labels as the command does: 11 named classes and void, not
    # "0 classes present (label_nc=10)".
    assert f"{LABEL_NC} classes present (label_nc={LABEL_NC}, plus don't-care index {VOID}), read with the " \
           f"command's --label-nc {LABEL_NC} --dont-care {VOID}" in lines
    assert any(line.split()[:2] == ["10", "class10"] for line in lines)
    assert any(line.strip().startswith(f"don't-care (index {VOID})") and "'void'" in line for line in lines)
    # Problems: one kind, a count, three examples without per-file advice; --verbose: all eight.
    examples = [line for line in lines if line.startswith("    ") and "labels/" in line]
    assert len(examples) == 3 and not any("--label-nc" in line for line in examples)
    assert "label maps with values outside the class range: 8; the command above fixes them (first 3 shown)" \
        in result.stdout
    verbose = check("--root", str(root), "--verbose")
    assert len([line for line in lines_of(verbose) if line.startswith("    ") and "labels/" in line]) == 8
    assert "--verbose lists every file" in result.stderr and "--verbose lists" not in verbose.stderr


def test_the_command_keeps_every_flag_passed(tmp_path):
    """Issue 23 item 2: `--set data.aspect_ratio=1.333` passed, the check passed, and the printed
    command dropped it."""
    root = camvid_like(tmp_path, n_train=2, n_val=1)
    result = check("--root", str(root), "--label-nc", str(LABEL_NC), "--dont-care", str(VOID),
                   "--set", "data.aspect_ratio=1.333", "--set", "data.load_size=300")
    assert result.exit_code == 0, result.output
    lines = lines_of(result)
    assert lines[1].startswith("verdict: ready: all 3 pairs")
    command = shlex.split(lines[2][len("train with: "):])
    for flag in (["--label-nc", str(LABEL_NC)], ["--dont-care", str(VOID)], ["--set", "data.aspect_ratio=1.333"],
                 ["--set", "data.load_size=300"]):
        assert any(command[i:i + 2] == flag for i in range(len(command))), (flag, command)
    assert f"--dont-care {VOID}: you passed it; label_names.txt also calls {VOID} 'void'" in result.stdout
    # With only the aspect ratio passed, the label flags are inferred and the aspect ratio kept.
    partial = check("--root", str(root), "--set", "data.aspect_ratio=1.333")
    line = next(ln for ln in lines_of(partial) if ln.startswith("train with: "))
    assert line.endswith(f"--label-nc {LABEL_NC} --dont-care {VOID} --set data.aspect_ratio=1.333")
    # The command checks clean as printed.
    again = runner.invoke(app, ["data", "check", *shlex.split(line[len("train with: "):])[2:]])
    assert again.exit_code == 0, again.output


def test_problems_no_flag_fixes_are_told_apart_from_those_the_command_fixes(tmp_path):
    root = camvid_like(tmp_path, n_train=4, n_val=1)
    photo = root / "train" / "images" / "train_001.jpg"
    photo.write_bytes(photo.read_bytes()[:200])                                   # truncated
    (root / "train" / "labels" / "train_002.png").unlink()                       # no label
    result = check("--root", str(root))
    verdict = lines_of(result)[1]
    assert verdict.startswith("verdict: not ready: 2 problem(s) that the command below does not fix (")
    assert "1 unreadable image," in verdict and "1 image without its label map" in verdict
    assert "the command below fixes the other 3 (3 label maps with values outside the class range)" in verdict
    assert "train_001.jpg: cannot read image" in result.stdout


def test_255_is_inferred_as_dont_care_and_says_why(tmp_path):
    root = tmp_path / "own"
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for sub in ("images", "labels"):
            (root / split / sub).mkdir(parents=True)
        label = np.zeros((32, 48), np.uint8)
        label[:, 16:] = 2
        label[:4] = 255
        Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(root / split / "images" / "a.png")
        Image.fromarray(label).save(root / split / "labels" / "a.png")
    report = check_dataset(resolve("spade", dataset="folder", root=str(root)).data)
    flags = {flag.text: flag.why for flag in report.flags}
    assert "255 lies apart from the other values (up to 2)" in flags["--dont-care 255"]
    assert "1 never occur" in flags["--label-nc 3"]                # class 1 has no pixels
    assert "--set data.aspect_ratio=1.5" in flags
    histogram = report.histogram
    assert histogram.label_nc == 3 and histogram.pixels.sum() == 2 * 32 * 48
    assert histogram.pixels[3] == 2 * 4 * 48 and histogram.images.tolist() == [2, 0, 2, 2]
    assert "no pixels: 1 class_1" in report.summary()
