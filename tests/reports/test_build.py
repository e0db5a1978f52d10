"""build_report end to end on fabricated runs: files, failed pairs, protocol warnings, figures."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fake_runs import make_run
from reports.bootstrap import BootstrapSettings
from reports.build import build_report
from reports.collect import ReportError, collect_runs
from reports.figures import loss_curves, read_losses, sample_grid

FAST = BootstrapSettings(replicates=200, fid_replicates=40)


def test_report_files_and_failed_pair(ablation_runs, tmp_path):
    out = tmp_path / "reports" / "smoke"
    result = build_report([ablation_runs], out, settings=FAST, progress=False)
    assert result["runs"] == 9 and result["failed"] == 1
    md = result["markdown"].read_text()
    assert md.startswith("# Ablation report: smoke")
    assert "| runs" not in md  # the failed pair is in its own table, named with its error:
    assert "pix2pixhd-s2 | pix2pixhd | 2 | failed | TrainingError: non-finite loss at step 100 |" in md
    assert "| pix2pixhd | 2 (+1 failed) |" in md
    assert "**agrees** — SPADE beats concatenating the segmap" in md
    # pix2pixhd has 2 evaluated seeds: no verdict, and the report says why.
    assert "**inconclusive** — SPADE beats pix2pixHD" in md
    assert "2 / 3 seeds (a verdict needs 3 per variant); 200 training steps, 12 images" in md
    assert "unlikely to be seed or image luck" not in md
    assert "FID protocol: pytorch-fid" in md and "hardware: cpu (test)" in md
    for name in ("samples", "losses", "metrics"):
        assert f"(figures/synthetic_{name}.png)" in md

    summary = json.loads(result["summary"].read_text())
    failed = [r for r in summary["runs"] if r["status"] == "failed"]
    assert [(r["variant"], r["seed"]) for r in failed] == [("pix2pixhd", 2)]
    section = summary["datasets"]["synthetic"]
    assert section["differences"]["concat"]["miou"]["excludes_zero"] is True
    assert section["protocol_mismatches"] == [] and summary["bootstrap"]["replicates"] == 200

    csv = pd.read_csv(result["csv"])
    spade = csv[(csv["row"] == "variant") & (csv["variant"] == "spade")].iloc[0]
    fids = [r.value("fid") for r in collect_runs([ablation_runs]) if r.variant == "spade"]
    assert spade["fid_mean"] == pytest.approx(np.mean(fids))
    assert csv[csv["variant"] == "pix2pixhd"].iloc[0]["failed"] == 1

    tex = result["latex"].read_text()
    assert tex.count(r"\begin{tabular}") == 2 and r"\mathbf{" in tex
    assert "95\\%" in tex and " 95%" not in tex  # an unescaped % would comment out the line

    assert len(result["figures"]) == 3
    for path in result["figures"]:
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 300


@pytest.mark.parametrize("key, value", [
    ("segmenter_sha256", "c" * 64), ("fid_extractor_sha256", "d" * 64), ("fid_protocol", "tf"),
    ("label_mapping", "cityscapes-35-to-19"), ("eval_size", 128), ("real_set", "test"),
])
def test_runs_scored_under_different_protocols_are_refused(tmp_path, real_stats, key, value):
    root = tmp_path / "runs"
    make_run(root, "spade", 0, quality=0.3, real_stats=real_stats)
    make_run(root, "spade", 1, quality=0.3, real_stats=real_stats)
    make_run(root, "concat", 0, quality=0.2, real_stats=real_stats, protocol={key: value})
    with pytest.raises(ReportError) as error:
        build_report([root], tmp_path / "out", settings=FAST, figures=False, progress=False)
    message = str(error.value)
    assert f"{key}: " in message and "(concat/seed0)" in message
    assert "(spade/seed0, spade/seed1)" in message and "\n" not in message
    assert not (tmp_path / "out").exists()


def test_training_hardware_and_code_differences_are_listed(tmp_path, real_stats):
    root = tmp_path / "runs"
    make_run(root, "spade", 0, quality=0.3, real_stats=real_stats)
    concat = make_run(root, "concat", 0, quality=0.2, real_stats=real_stats, steps=400,
                      hardware="NVIDIA H100", code={"commit": "abc123" + "0" * 34, "dirty": True})
    metrics = json.loads((concat / "eval" / "metrics.json").read_text())
    metrics["warnings"] = ["FID with 12 images is biased upwards"]
    (concat / "eval" / "metrics.json").write_text(json.dumps(metrics))
    result = build_report([root], tmp_path / "out", settings=FAST, figures=False, progress=False)
    md = result["markdown"].read_text()
    assert "training settings differ between runs (steps, checkpoint_step)" in md
    assert "different hardware" in md and "different code commits" in md
    assert ("code commits differ (listed, not an error): abc123000000 (dirty) (concat/seed0); "
            "c0ffee000000 (clean) (spade/seed0)") in md
    assert "- FID with 12 images is biased upwards (1 of 2 runs)" in md


def test_datasets_are_reported_separately(tmp_path, real_stats):
    make_run(tmp_path / "a", "spade", 0, real_stats=real_stats, dataset="cityscapes")
    make_run(tmp_path / "b", "spade", 0, real_stats=real_stats)
    result = build_report([tmp_path / "a", tmp_path / "b"], tmp_path / "out", settings=FAST,
                          figures=False, progress=False)
    md = result["markdown"].read_text()
    assert "## Dataset: cityscapes" in md and "## Dataset: synthetic" in md
    assert "| 62.3 |" in md  # the paper's SPADE mIoU beside ours on Cityscapes only
    assert md.count("The paper reports no numbers on synthetic") == 1
    assert result["figures"] == [] and not (tmp_path / "out" / "figures").exists()


def test_sample_grid_and_losses_tolerate_missing_pieces(tmp_path, real_stats):
    run = make_run(tmp_path, "spade", 0, real_stats=real_stats)
    make_run(tmp_path, "concat", 0, real_stats=real_stats, status="failed", error="x", evaluated=False)
    (run / "eval" / "images" / "00001.png").unlink()
    records = collect_runs([tmp_path])
    grid = sample_grid(records, tmp_path / "grid.png")
    with Image.open(grid) as image:  # 4 rows x (label, real, spade, concat) columns
        assert image.size[0] > image.size[1]
    failed = next(r for r in records if not r.ok)
    log = failed.dir / "logs" / "losses.jsonl"
    lines = log.read_text().splitlines()
    resumed = json.loads(lines[1]) | {"G/total": 123.0, "D/fake": float("inf")}
    log.write_text("\n".join(lines[:-1] + [json.dumps(resumed), lines[-1]]) + "\n")
    frame = read_losses(failed)  # the line cut short by the crash is skipped
    assert frame["step"].max() == 100 and frame["step"].is_unique
    assert frame.loc[frame["step"] == resumed["step"], "G/total"].item() == 123.0  # latest wins
    assert frame["D/total"].isna().sum() == 1 and np.isfinite(frame["D/fake"].dropna()).all()
    assert loss_curves(records, tmp_path / "losses.png").is_file()
