"""Metric columns over runs scored at different times: a metric some runs lack, or hold at an older
version, is "-" for them with a note saying which runs and why; nothing is refused for it, and
nothing of theirs enters that column's means, intervals or verdicts."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fake_runs import make_run
from reports.bootstrap import BootstrapSettings, bootstrap_differences
from reports.build import build_report
from reports.collect import ReportError, collect_runs
from reports.columns import metric_columns
from spade_bench.metrics import Batch, Context, get_metric, list_metrics

FAST = BootstrapSettings(replicates=100, fid_replicates=20)
CURRENT = {m.name: m.version_string() for m in list_metrics()}


def _versions(**changes):
    return {"metric_versions": {**CURRENT, **changes}}


def _score_precision_recall(run, real_stats):
    """Add precision and recall to a fabricated run's metrics.json, as the harness would."""
    features = np.load(run / "eval" / "fake_features.npy")
    with np.load(real_stats) as stats:
        real = stats["features"]
    path = run / "eval" / "metrics.json"
    record = json.loads(path.read_text())
    for name in ("precision", "recall"):
        metric = get_metric(name)()
        metric.update(Batch(fake_features=features))
        record["metrics"][name] = metric.compute(Context(real_features=real)).value
    path.write_text(json.dumps(record))


def test_a_metric_no_run_has_is_a_dash_column_with_a_note(ablation_runs, tmp_path):
    result = build_report([ablation_runs], tmp_path / "out", settings=FAST, figures=False, progress=False)
    md = result["markdown"].read_text()
    spade_row = next(line for line in md.splitlines() if line.startswith("| spade |")).split(" | ")
    header = next(line for line in md.splitlines() if line.startswith("| variant | seeds | mIoU")).split(" | ")
    assert spade_row[header.index("precision ↑")] == "–" and spade_row[header.index("recall ↑")] == "–"
    assert ("- precision – for every run: not scored; `spade-bench eval --run RUN --metric precision` "
            "(keeps the other scores)") in md
    columns = json.loads(result["summary"].read_text())["datasets"]["synthetic"]["metric_coverage"]
    assert columns["precision"]["runs"] == [] and len(columns["precision"]["missing"]) == 8
    assert columns["fid"]["missing"] == {} and len(columns["fid"]["runs"]) == 8


def test_runs_scored_before_a_metric_existed_are_named_and_left_out_of_its_interval(tmp_path, real_stats):
    root = tmp_path / "runs"
    for seed in range(3):
        for variant, quality in (("spade", 0.35), ("concat", 0.1)):
            run = make_run(root, variant, seed, quality=quality, real_stats=real_stats)
            if (variant, seed) != ("concat", 2):               # scored before precision existed
                _score_precision_recall(run, real_stats)
    records = collect_runs([root])
    result = bootstrap_differences(records, FAST, progress=False)
    concat = result.intervals["concat"]
    assert concat["precision"].variant_seeds == 2 and concat["miou"].variant_seeds == 3
    assert np.isfinite(concat["recall"].low)
    md = build_report([root], tmp_path / "out", settings=FAST, figures=False, progress=False)["markdown"].read_text()
    assert "- precision – for concat/seed2: not scored;" in md
    concat_row = next(line for line in md.splitlines() if line.startswith("| concat |"))
    assert "(n=2)" in concat_row


def test_an_older_version_is_withheld_from_its_column_only(tmp_path, real_stats):
    root = tmp_path / "runs"
    old_fid = CURRENT["fid"].replace(get_metric("fid").version, "spade-bench-fid/0")
    for seed in range(2):
        make_run(root, "spade", seed, quality=0.3, real_stats=real_stats, protocol=_versions())
    make_run(root, "concat", 0, quality=0.2, real_stats=real_stats, protocol=_versions(fid=old_fid))
    records = collect_runs([root])
    columns = metric_columns(records)
    concat = next(r for r in records if r.variant == "concat")
    assert concat.value("fid") is None and concat.value("kid") is not None
    assert columns["fid"].missing == {"concat/seed0": "scored with spade-bench-fid/0, the column shows "
                                                      "spade-bench-fid/1"}
    result = bootstrap_differences(records, FAST, progress=False)
    assert "fid" not in result.intervals["concat"] and "kid" in result.intervals["concat"]
    md = build_report([root], tmp_path / "out", settings=FAST, figures=False, progress=False)["markdown"].read_text()
    assert "- FID – for concat/seed0: scored with spade-bench-fid/0, the column shows spade-bench-fid/1;" in md
    assert "NOT comparable" not in md                      # a per-metric matter, not a protocol clash


def test_when_every_run_holds_an_older_version_the_column_says_so(tmp_path, real_stats):
    old_kid = CURRENT["kid"].replace(get_metric("kid").version, "spade-bench-kid/0")
    for seed in range(2):
        make_run(tmp_path, "spade", seed, real_stats=real_stats, protocol=_versions(kid=old_kid))
    md = build_report([tmp_path], tmp_path / "out", settings=FAST, figures=False, progress=False)["markdown"]
    assert ("KID ×10³: the column shows spade-bench-kid/0; this code computes spade-bench-kid/1"
            in md.read_text())


def test_one_version_from_two_implementations_is_refused(tmp_path, real_stats):
    other = CURRENT["kid"].replace("torchmetrics", "torchmetrics 0.0 (patched)")
    make_run(tmp_path, "spade", 0, real_stats=real_stats, protocol=_versions())
    make_run(tmp_path, "concat", 0, real_stats=real_stats, protocol=_versions(kid=other))
    with pytest.raises(ReportError, match=r"metric_versions kid: .*\(patched\).*\(concat/seed0\) vs .*\(spade/seed0\)"):
        build_report([tmp_path], tmp_path / "out", settings=FAST, figures=False, progress=False)


def test_a_metric_protocol_key_is_compared_among_the_runs_that_hold_the_metric(tmp_path, real_stats):
    """A run scored without KID records no KID subsets; it used to be refused for 'differing'."""
    make_run(tmp_path, "spade", 0, real_stats=real_stats)
    run = make_run(tmp_path, "concat", 0, real_stats=real_stats)
    record = json.loads((run / "eval" / "metrics.json").read_text())
    record["metrics"].update(kid=None, kid_std=None)
    record["protocol"].update(kid_subsets=None, kid_subset_size=None)
    (run / "eval" / "metrics.json").write_text(json.dumps(record))
    md = build_report([tmp_path], tmp_path / "out", settings=FAST, figures=False, progress=False)["markdown"]
    text = md.read_text()
    assert "KID subsets: 20" in text and "- KID ×10³ – for concat/seed0: not scored;" in text
    # ... but among the runs that hold KID, a different subset count still refuses the report.
    make_run(tmp_path, "spade", 1, real_stats=real_stats, protocol={"kid_subsets": 50})
    with pytest.raises(ReportError, match=r"kid_subsets: 20 \(spade/seed0\) vs 50 \(spade/seed1\)"):
        build_report([tmp_path], tmp_path / "out2", settings=FAST, figures=False, progress=False)
