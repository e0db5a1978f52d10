"""What the report says about a user's own dataset (issue 23): its folder's name (or --name),
no error bars from one seed, a legend that covers no line, fair bold on ties, and the "SPADE
starts slowly" paragraph only when this run shows the sign, with this run's numbers."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import ErrorbarContainer
from typer.testing import CliRunner

from fake_runs import make_run
from reports.bootstrap import BootstrapSettings
from reports.build import build_report
from reports.collect import ReportError, collect_runs
from reports.figures import metric_bars_figure
from reports.tables import SPECS, best_marks, main_table, reference_values, render_main

FAST = BootstrapSettings(replicates=50, fid_replicates=20, seed=0)


def own_run(root: Path, variant: str, seed: int, data_root: str, **kwargs) -> Path:
    """A fake `folder` run whose config names its dataset folder."""
    run = make_run(root, variant, seed, dataset="folder", **kwargs)
    config = json.loads((run / "config.json").read_text())
    config["data"]["root"] = data_root
    (run / "config.json").write_text(json.dumps(config))
    return run


def test_a_folder_dataset_is_named_by_its_folder_or_by_name(tmp_path, real_stats):
    for seed in range(2):
        own_run(tmp_path / "camvid", "spade", seed, "/data/CamVid", real_stats=real_stats)
        own_run(tmp_path / "camvid", "concat", seed, "/data/CamVid", quality=0.2, real_stats=real_stats)
    result = build_report([tmp_path / "camvid"], tmp_path / "out", settings=FAST, figures=False, progress=False)
    md = result["markdown"].read_text()
    assert "## Dataset: CamVid (`folder` format at `/data/CamVid`)" in md
    assert "The paper reports no numbers on CamVid" in md and "numbers on folder" not in md
    assert set(json.loads(result["summary"].read_text())["datasets"]) == {"CamVid"}
    # A second own dataset is its own section, never compared with the first.
    own_run(tmp_path / "other", "spade", 0, "/data/mapillary-small", real_stats=real_stats)
    both = build_report([tmp_path / "camvid", tmp_path / "other"], tmp_path / "both", settings=FAST, figures=False,
                        progress=False)["markdown"].read_text()
    assert "## Dataset: CamVid" in both and "## Dataset: mapillary-small" in both
    assert "Runs on 2 datasets (CamVid, mapillary-small) are reported separately" in both
    with pytest.raises(ReportError, match=r"--name 'x' names the dataset.*2 datasets \(CamVid, mapillary-small\)"):
        build_report([tmp_path / "camvid", tmp_path / "other"], tmp_path / "x", dataset_name="x", settings=FAST,
                     figures=False, progress=False)
    # `spade-bench report --name` names it.
    from cli import app
    cli = CliRunner().invoke(app, ["report", str(tmp_path / "camvid"), "--out", str(tmp_path / "named"),
                                   "--name", "CamVid (11 classes)", "--bootstrap", "20", "--fid-bootstrap", "10"])
    assert cli.exit_code == 0, cli.output
    assert "## Dataset: CamVid (11 classes) (`folder` format" in (tmp_path / "named" / "ablation.md").read_text()


def _draw(fig):
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def test_metric_bars_draw_no_error_bars_from_one_seed_and_no_legend_over_a_line(tmp_path, real_stats):
    make_run(tmp_path / "one", "spade", 0, real_stats=real_stats)
    make_run(tmp_path / "one", "concat", 0, quality=0.2, real_stats=real_stats)
    records = collect_runs([tmp_path / "one"])
    fig = metric_bars_figure(main_table(records, "synthetic"), reference_values(records))
    assert not any(isinstance(c, ErrorbarContainer) for ax in fig.axes for c in ax.containers)
    # The legend sits outside every panel, so it covers neither the ceiling line nor a bar.
    renderer = _draw(fig)
    assert all(ax.get_legend() is None for ax in fig.axes)
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    assert {t.get_text() for t in legend.get_texts()} >= {"real val photos (ceiling)"}
    for ax in fig.axes:
        if ax.get_visible():
            assert not box.overlaps(ax.get_window_extent(renderer)), ax.get_title()
    # With two seeds of one variant, that variant alone gets error bars.
    make_run(tmp_path / "one", "spade", 1, quality=0.05, real_stats=real_stats)
    records = collect_runs([tmp_path / "one"])
    fig = metric_bars_figure(main_table(records, "synthetic"), reference_values(records))
    bars = [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 1 and len(bars[0].lines[2][0].get_segments()) == 1   # one variant's bar


def test_best_is_decided_on_the_values_as_shown():
    """Issue 23: peak memory was bolded for one of two values that both showed as equal."""
    memory = SPECS["train_peak_memory_gib"]                                   # lower, 2 decimals
    two = best_marks(pd.Series([1.1312, 1.1288], index=["spade", "concat"]), memory)
    assert not two.any()                                                       # both show 1.13: none is best
    three = best_marks(pd.Series([1.1312, 1.1288, 1.5], index=["spade", "concat", "pix2pixhd"]), memory)
    assert three.tolist() == [True, True, False]                               # tied best: both bold
    fid = best_marks(pd.Series([20.04, 20.16, math.nan], index=["a", "b", "c"]), SPECS["fid"])
    assert fid.tolist() == [True, False, False]                                # 20.0 < 20.2


def test_tied_cells_render_bold_together(tmp_path, real_stats):
    for variant, memory in (("spade", 0.30), ("concat", -0.20), ("pix2pixhd", -0.2004)):
        make_run(tmp_path, variant, 0, quality=memory, real_stats=real_stats)   # peak memory = 0.5 + quality
    records = collect_runs([tmp_path])
    shown = render_main(main_table(records, "synthetic"), reference_values(records), "synthetic")
    column = shown["peak memory (GiB) ↓"].tolist()[:3]
    assert column == ["0.80", "**0.30**", "**0.30**"]


def _slow_start(tmp_path, real_stats, dataset: str, d_loss: float) -> str:
    root = tmp_path / f"{dataset}-{d_loss}"
    kwargs = dict(real_stats=real_stats)
    washed = {"uniform_distinctness": 0.002, "label_spread": 0.001, "degenerate": True, "rule": "test rule"}
    if dataset == "folder":
        own_run(root, "spade", 0, "/data/CamVid", quality=-0.3, d_loss=d_loss, label_dependence=washed, **kwargs)
        own_run(root, "concat", 0, "/data/CamVid", quality=0.3, **kwargs)
    else:
        make_run(root, "spade", 0, quality=-0.3, d_loss=d_loss, label_dependence=washed, **kwargs)
        make_run(root, "concat", 0, quality=0.3, **kwargs)
    return build_report([root], tmp_path / f"out-{dataset}-{d_loss}", settings=FAST, figures=False,
                        progress=False)["markdown"].read_text()


def test_the_slow_start_paragraph_needs_the_sign_in_this_run(tmp_path, real_stats):
    """Issue 23 item 7: printed with the last D loss at 0.813 (no sign), quoting the procedural
    data's 31-33 mIoU on CamVid."""
    no_sign = _slow_start(tmp_path, real_stats, "folder", 0.813)
    assert "SPADE starts slowly" not in no_sign and "31-33" not in no_sign
    assert "do not show the sign of SPADE's slow start" in no_sign and "spade/seed0 0.813 at step 200" in no_sign
    sign = _slow_start(tmp_path, real_stats, "folder", 0.02)
    assert "SPADE starts slowly here (1 of 1 spade runs are flagged degenerate), and its runs show the sign" in sign
    assert "spade/seed0 0.020 at step 200" in sign and "31-33" not in sign and "1e-4" not in sign
    demo = _slow_start(tmp_path, real_stats, "synthetic", 0.02)                # the smoke demo's own numbers
    assert "SPADE starts slowly here" in demo and "31-33 mIoU at 200 steps" in demo
