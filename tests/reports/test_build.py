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
    # Three seeds a side and an interval that excludes 0, but these are smoke-preset runs: the
    # verdict obeys the same scale rule as the Scale section (issue 20.5; it used to say "agrees").
    verdict = next(line for line in md.splitlines() if "SPADE beats concatenating the segmap" in line)
    assert verdict.startswith("- **inconclusive**") and "primary mIoU agrees" in verdict
    assert "no verdict at this scale: the smoke preset checks the pipeline" in verdict
    assert "the primary mIoU alone would say 'agrees'" in verdict
    assert "### Scale" in md and "this report draws no verdict from them (the smoke preset" in md
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
    assert {r["code"] for r in summary["runs"] if r["status"] == "ok"} == {"c0ffee000000 (clean)"}
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


def test_loss_log_without_loss_terms_draws_no_figure(tmp_path, real_stats):
    """A run whose losses.jsonl holds only bookkeeping (a job killed before its first loss
    record) used to raise ZeroDivisionError in the report; now the figure is just left out."""
    run = make_run(tmp_path, "spade", 0, real_stats=real_stats)
    (run / "logs" / "losses.jsonl").write_text(json.dumps({"step": 1, "time": 0.5}) + "\n")
    assert loss_curves(collect_runs([tmp_path]), tmp_path / "losses.png") is None


def test_scores_beyond_resolution_and_degenerate_runs_are_flagged(tmp_path, real_stats):
    # spade's mIoU (~74) sits above what the segmenter scores on real photos (60), and every
    # FID below the real train-vs-val floor: neither may carry a verdict.
    root = tmp_path / "runs"
    limits = {"real_val_miou": 60.0, "real_val_pixel_accuracy": 99.0, "fid_train_vs_val": 1e6}
    for seed in range(3):
        make_run(root, "spade", seed, quality=0.35, real_stats=real_stats, references=limits)
        make_run(root, "concat", seed, quality=0.1, real_stats=real_stats, references=limits,
                 label_dependence={"uniform_distinctness": 0.001, "label_spread": 0.001,
                                   "degenerate": seed == 0, "rule": "label_spread < 0.01"})
    result = build_report([root], tmp_path / "out", settings=FAST, figures=False, progress=False)
    md = result["markdown"].read_text()
    spade_row = next(line for line in md.splitlines() if line.startswith("| spade |"))
    assert spade_row.count("†") == 2                    # its mIoU and its FID
    assert "| concat (degenerate: 1 of 3) |" in md
    assert "**beyond the evaluator's resolution**" in md and "mIoU (%) " in md
    verdict = next(line for line in md.splitlines() if "SPADE beats concatenating" in line)
    assert "mIoU inconclusive" in verdict and "FID inconclusive" in verdict
    assert "pixel acc" not in verdict and "accuracy agrees" in verdict  # within resolution
    summary = json.loads(result["summary"].read_text())
    assert set(summary["datasets"]["synthetic"]["beyond_resolution"]["spade"]) == {"miou", "fid"}


def test_label_dependence_table_and_the_slow_start_of_spade_at_smoke_scale(tmp_path, real_stats):
    root = tmp_path / "runs"
    washed_out = {"uniform_distinctness": 0.002, "label_spread": 0.001, "degenerate": True,
                  "rule": "label_spread < 0.01"}
    make_run(root, "spade", 0, quality=-0.3, real_stats=real_stats, label_dependence=washed_out,
             d_loss=0.02)
    make_run(root, "concat", 0, quality=0.3, real_stats=real_stats)
    make_run(root, "pix2pixhd", 0, quality=0.0, real_stats=real_stats,
             label_dependence=washed_out | {"degenerate": False, "label_spread": 0.5})
    md = build_report([root], tmp_path / "out", settings=FAST, figures=False,
                      progress=False)["markdown"].read_text()
    assert "### Label dependence (the paper's Figure 3 argument)" in md
    assert "| pix2pixhd | 1 | 0.0020 | 0.5000 | 0 of 1 |" in md
    assert "single class everywhere" in md and "label_spread < 0.01" in md
    assert "do **not** reproduce the paper's ordering" in md and "200 training steps, 12 images" in md
    assert "SPADE starts slowly here (1 of 1 spade runs are flagged degenerate)" in md
    assert "xavier, gain 0.02" in md and "spade/seed0 0.020 at step 200" in md
    assert "image sampling only" in md and "**inconclusive**" in md
    assert "**agrees**" not in md and "**disagrees**" not in md


def test_released_weights_get_paper_rescored_and_retrained_columns(tmp_path, real_stats):
    for seed in range(2):
        make_run(tmp_path / "ours", "spade", seed, quality=0.3, real_stats=real_stats,
                 dataset="cityscapes")
    released = make_run(tmp_path / "nvlabs", "spade", 0, quality=0.4, real_stats=real_stats,
                        dataset="cityscapes", provenance={"source": "nvlabs", "files": {}})
    result = build_report([tmp_path / "ours", tmp_path / "nvlabs"], tmp_path / "out",
                          settings=FAST, figures=False, progress=False)
    md = result["markdown"].read_text()
    header = next(line for line in md.splitlines() if line.startswith("| variant |"))
    assert ("| mIoU (%) ↑: paper | mIoU (%) ↑: released weights, re-scored | "
            "mIoU (%) ↑: retrained |") in header
    assert "KID ×10³ ↓: released weights, re-scored | KID ×10³ ↓: retrained" in header
    records = collect_runs([tmp_path / "ours", tmp_path / "nvlabs"])
    ours = np.mean([r.value("miou") for r in records if not r.released])
    theirs = json.loads((released / "eval" / "metrics.json").read_text())["metrics"]["miou"]
    row = next(line for line in md.splitlines() if line.startswith("| spade |")).split(" | ")
    assert row[1:5] == ["2 + 1 released", "62.3", f"{theirs:.1f}", row[4]]
    assert row[4].startswith(f"{ours:.1f} ± ")             # the released run is not a seed
    assert "Protocol difference: the paper scored with DRN-D-105" in md
    assert "label mapping not recorded" not in md and "label mapping" in md


def test_fid_floor_names_the_real_set_fid_compares_with(tmp_path, real_stats):
    """With eval.real_set=test the floor (metrics.json fid_train_vs_val, key kept) is real train vs
    TEST photos; the report used to call it "real train vs val photos"."""
    root = tmp_path / "runs"
    limits = {"real_val_miou": 99.0, "real_val_pixel_accuracy": 99.0, "fid_train_vs_val": 1e6}
    for seed in range(2):
        for variant in ("spade", "concat"):
            make_run(root, variant, seed, real_stats=real_stats, references=limits,
                     protocol={"real_set": "test"})
    result = build_report([root], tmp_path / "out", settings=FAST, figures=False, progress=False)
    md = result["markdown"].read_text()
    assert "| *real train vs test photos (FID floor)* |" in md and "train vs val" not in md
    assert r"\textit{real train vs test photos (FID floor)}" in result["latex"].read_text()
    beyond = json.loads(result["summary"].read_text())["datasets"]["synthetic"]["beyond_resolution"]
    assert beyond["spade"]["fid"].endswith("(real train vs test photos)")


def test_verdict_and_scale_section_obey_one_scale_rule(tmp_path, real_stats):
    """The same runs from a preset the rule accepts draw the verdict and the report has no Scale
    section; from the smoke preset neither (issue 20.5); a degenerate variant withholds it."""
    cases = (("paper", False, "agrees"), ("cpu", False, "agrees"), ("smoke", False, "inconclusive"),
             ("cpu", True, "inconclusive"))
    for preset, degenerate, expected in cases:
        root = tmp_path / f"runs-{preset}-{degenerate}"
        flagged = {"uniform_distinctness": 0.01, "label_spread": 0.01, "degenerate": True, "rule": "test"}
        for seed in range(3):
            make_run(root, "spade", seed, quality=0.35, real_stats=real_stats, steps=2000, preset=preset,
                     label_dependence=flagged if degenerate and seed == 0 else None)
            make_run(root, "concat", seed, quality=0.15, real_stats=real_stats, steps=2000, preset=preset)
        result = build_report([root], tmp_path / f"out-{preset}-{degenerate}", settings=FAST, figures=False,
                              progress=False)
        md = result["markdown"].read_text()
        verdict = next(line for line in md.splitlines() if "SPADE beats concatenating" in line)
        finding = json.loads(result["summary"].read_text())["datasets"]["synthetic"]["findings"][0]
        assert finding["verdict"] == expected and verdict.startswith(f"- **{expected}**"), (preset, degenerate)
        assert ("### Scale" in md) == (preset == "smoke"), preset
        if preset == "smoke":
            assert "no verdict at this scale" in verdict and "draws no verdict from them" in md
        if degenerate:
            assert "spade is flagged degenerate in 1 of 3 seeds" in verdict
        assert finding["primary_metric"] == "miou"


def test_a_report_that_fails_part_way_leaves_the_previous_one_whole(ablation_runs, tmp_path, monkeypatch):
    """Issue 21: a report killed part way left figures of the new input beside tables of the old.
    The report is written into a staging folder and swapped in whole (spade_bench.io.staged_folder)."""
    out = tmp_path / "report"
    build_report([ablation_runs], out, settings=FAST, progress=False)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # New input: one more seed. The report then fails at its last figure (a kill, a full disk).
    make_run(ablation_runs, "concat", 7, quality=0.5, real_stats=tmp_path / "cache" / "real_stats.npz")

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("reports.build.figs.metric_bars", full_disk)
    with pytest.raises(OSError):
        build_report([ablation_runs], out, settings=FAST, progress=False)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before                                        # not one new figure, not one new table
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []   # no staging left
    monkeypatch.undo()
    result = build_report([ablation_runs], out, settings=FAST, progress=False)
    assert result["runs"] == 10 and all(p.is_file() and p.parent == out / "figures" for p in result["figures"])


def test_a_report_into_a_folder_of_other_files_is_refused(ablation_runs, tmp_path):
    from spade_bench.errors import StorageError

    out = tmp_path / "notes"
    out.mkdir()
    (out / "todo.txt").write_text("mine")
    with pytest.raises(StorageError, match=r"notes holds files that are not a report folder \(todo.txt\)"):
        build_report([ablation_runs], out, settings=FAST, figures=False, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["todo.txt"]
