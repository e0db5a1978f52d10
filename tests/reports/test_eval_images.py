"""The report says which validation files were scored, and refuses runs scored on other files."""
from __future__ import annotations

import json

import pytest

from fake_runs import make_run
from reports.bootstrap import BootstrapSettings
from reports.build import build_report
from reports.collect import ReportError
from spade_bench.data.subset import neighbour_similarity, subset_record

FAST = BootstrapSettings(replicates=50, fid_replicates=10)


def _with_subset(run, files, *, consecutive: bool):
    path = run / "eval" / "metrics.json"
    record = json.loads(path.read_text())
    subset = subset_record(files, 40, "val = the test split rule")
    subset["neighbours"] = neighbour_similarity([[0.0], [0.01], [0.02], [0.03], [0.04], [0.05]] if consecutive
                                                else [[0.0], [0.9], [0.1], [0.8], [0.2], [0.7]])
    record["eval_subset"] = subset
    record["protocol"]["eval_subset_sha256"] = subset["sha256"]
    path.write_text(json.dumps(record))


@pytest.mark.parametrize("consecutive", [False, True])
def test_the_report_names_the_subset(tmp_path, real_stats, consecutive):
    root = tmp_path / "runs"
    files = [f"frame_{i:03d}" for i in range(0, 40, 4)]
    for variant in ("spade", "concat"):
        _with_subset(make_run(root, variant, 0, real_stats=real_stats), files, consecutive=consecutive)
    result = build_report([root], tmp_path / "report", settings=FAST, figures=False, progress=False)
    md = result["markdown"].read_text()
    assert "### Evaluation images" in md
    assert "Scored: 10 of the 40 validation items" in md and "evenly spaced" in md
    assert "Split: val = the test split rule." in md
    assert ("look like consecutive frames" in md) is consecutive
    assert ("no sign of consecutive frames" in md) is not consecutive
    summary = json.loads(result["summary"].read_text())
    assert summary["datasets"]["synthetic"]["eval_subset"]["files"] == files


def test_runs_scored_on_other_files_are_refused(tmp_path, real_stats):
    root = tmp_path / "runs"
    _with_subset(make_run(root, "spade", 0, real_stats=real_stats), ["a", "b"], consecutive=False)
    _with_subset(make_run(root, "concat", 0, real_stats=real_stats), ["a", "c"], consecutive=False)
    with pytest.raises(ReportError, match=r"eval_subset_sha256: .*concat/seed0.*spade/seed0"):
        build_report([root], tmp_path / "report", settings=FAST, figures=False, progress=False)


def test_runs_without_the_record_say_so(tmp_path, real_stats):
    root = tmp_path / "runs"
    make_run(root, "spade", 0, real_stats=real_stats)
    md = build_report([root], tmp_path / "report", settings=FAST, figures=False,
                      progress=False)["markdown"].read_text()
    assert "### Evaluation images" in md and "Not recorded" in md
