"""The main table on synthetic metrics.json inputs: means, stds, n, best marking, paper columns."""
from __future__ import annotations

import math

import numpy as np
import pytest

from fake_runs import make_run
from reports.bootstrap import Interval, bootstrap_metrics
from reports.collect import collect_runs
from reports.tables import (SPECS, csv_rows, format_cell, format_interval, latex_escape, main_table,
                            reference_values, render_differences, render_main, to_latex, to_markdown)


@pytest.fixture
def records(ablation_runs):
    return collect_runs([ablation_runs])


def test_means_stds_and_counts_match_numpy(records):
    table = main_table(records, "synthetic")
    assert list(table.index) == ["spade", "concat", "pix2pixhd"]  # spade first
    for variant in table.index:
        ok = [r for r in records if r.variant == variant and r.ok]
        for key in ("miou", "pixel_accuracy", "fid", "kid", "train_images_per_s"):
            values = np.array([r.value(key) for r in ok])
            assert table.loc[variant, f"{key}_mean"] == pytest.approx(values.mean())
            assert table.loc[variant, f"{key}_std"] == pytest.approx(values.std(ddof=1))
            assert table.loc[variant, f"{key}_n"] == len(ok)
    assert table.loc["pix2pixhd", ["runs", "ok", "failed"]].tolist() == [3, 2, 1]


def test_best_marking_follows_each_columns_direction(records):
    table = main_table(records, "synthetic")
    best = lambda key: list(table.index[table[f"{key}_best"]])  # noqa: E731
    assert best("miou") == best("pixel_accuracy") == ["spade"]       # higher is better
    assert best("fid") == best("kid") == ["spade"]                   # lower is better
    assert best("train_images_per_s") == ["pix2pixhd"]               # fastest
    assert best("train_peak_memory_gib") == ["pix2pixhd"]            # least memory
    assert best("generator_params") == []                            # not marked


def test_rendered_cells_bold_the_best_and_show_failures(records):
    table = main_table(records, "synthetic")
    md = render_main(table, reference_values(records), "synthetic")
    spade, pix2pixhd = md.iloc[0], md.iloc[2]
    mean, std = table.loc["spade", "miou_mean"], table.loc["spade", "miou_std"]
    assert spade["mIoU (%) ↑"] == f"**{mean:.1f} ± {std:.1f}**"
    assert pix2pixhd["seeds"] == "2 (+1 failed)"
    assert md.iloc[-2, 0].startswith("*real val photos") and md.iloc[-2]["mIoU (%) ↑"] == "80.0"
    assert md.iloc[-1]["FID ↓"] == "5.0"
    latex = render_main(table, reference_values(records), "synthetic", latex=True)
    assert latex.iloc[0, 2] == rf"$\mathbf{{{mean:.1f} \pm {std:.1f}}}$"


def test_cell_format_shows_n_when_it_differs_and_dashes_for_missing():
    spec = SPECS["fid"]
    assert format_cell(12.34, 0.56, 2, 3, spec, bold=False, latex=False) == "12.3 ± 0.6 (n=2)"
    assert format_cell(12.34, math.nan, 1, 1, spec, bold=True, latex=False) == "**12.3**"
    assert format_cell(math.nan, math.nan, 0, 3, spec, bold=False, latex=False) == "–"
    assert format_cell(0.0123, 0.001, 3, 3, SPECS["kid"], bold=False, latex=True) == r"$12.30 \pm 1.00$"


def test_all_failed_variant_is_a_row_of_failures(tmp_path, real_stats):
    make_run(tmp_path, "spade", 0, real_stats=real_stats)
    make_run(tmp_path, "concat", 0, real_stats=real_stats, status="failed", error="oom", evaluated=False)
    records = collect_runs([tmp_path])
    table = main_table(records, "synthetic")
    row = render_main(table, reference_values(records), "synthetic").iloc[1]
    assert row["variant"] == "concat (failed)" and row["seeds"] == "0 (+1 failed)"
    assert row["FID ↓"] == "failed"
    assert not table["miou_best"].any()  # one evaluated variant: nothing to compare


def test_paper_columns_only_where_the_dataset_matches(tmp_path, real_stats):
    for variant in ("spade", "pix2pixhd", "concat"):
        make_run(tmp_path, variant, 0, real_stats=real_stats, dataset="cityscapes")
    records = collect_runs([tmp_path])
    table = main_table(records, "cityscapes")
    assert table.loc["spade", ["paper_miou", "paper_pixel_accuracy", "paper_fid"]].tolist() == [62.3, 81.9, 71.8]
    assert table.loc["pix2pixhd", "paper_fid"] == 95.0
    assert math.isnan(table.loc["concat", "paper_miou"])
    md = render_main(table, reference_values(records), "cityscapes")
    assert list(md.columns[2:4]) == ["mIoU (%) ↑", "paper"]
    assert md.iloc[0, 3] == "62.3"
    synthetic = render_main(main_table(records, "synthetic"), {}, "synthetic")
    assert "paper" not in synthetic.columns


def test_differences_markdown_latex_and_csv(records):
    intervals = {"concat": {"miou": Interval(-2.0, -3.0, -1.0, 100, 3, 3),
                            "fid": Interval(1.5, -0.5, 3.5, 20, 3, 3)}}
    md = render_differences(intervals)
    assert md.iloc[0]["Δ mIoU (%)"] == "-2.00 [-3.00, -1.00]*"
    assert md.iloc[0]["Δ FID"] == "+1.50 [-0.50, +3.50]"
    assert md.iloc[0]["Δ KID ×10³"] == "–"
    assert format_interval(intervals["concat"]["miou"], SPECS["miou"], latex=True).endswith("$^{*}$")
    text = to_markdown(md)
    # variant, seeds, then one column per metric with a per-image replicate (the registry's)
    assert text.splitlines()[1] == "|:---|" + "---:|" * (1 + len(bootstrap_metrics()))
    assert text.count("\n") == 2
    tex = to_latex(render_differences(intervals, latex=True), caption="c", label="l")
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"$\Delta$ mIoU (\%)" in tex
    csv = csv_rows("synthetic", main_table(records, "synthetic"), reference_values(records), intervals)
    concat = csv[csv["variant"] == "concat"].iloc[0]
    assert (concat["diff_miou"], concat["diff_miou_ci_low"]) == (-2.0, -3.0)
    assert str(csv["ok"].dtype) == "Int64"
    assert csv[csv["row"] == "reference"]["variant"].tolist() == [
        "real_val_miou", "real_val_pixel_accuracy", "fid_train_vs_val"]


def test_latex_escape():
    assert latex_escape("a_b 95% & ±…") == r"a\_b 95\% \& $\pm$\ldots{}"


def test_star_and_labels_need_three_seeds_a_side():
    spec = SPECS["miou"]
    three = Interval(-2.0, -3.0, -1.0, 100, 3, 3)
    two = Interval(-2.0, -3.0, -1.0, 100, 2, 3)
    one = Interval(-2.0, -3.0, -1.0, 100, 1, 1, method="image sampling only")
    assert format_interval(three, spec, latex=False).endswith("*")
    assert not format_interval(two, spec, latex=False).endswith("*")
    assert not format_interval(one, spec, latex=False).endswith("*")
    seeds = render_differences({"a": {"miou": two}, "concat": {"miou": one}})["seeds (variant / spade)"]
    assert seeds.tolist() == ["2 / 3 (fewer than 3: no verdict)", "1 / 1 (image sampling only)"]
