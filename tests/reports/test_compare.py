"""`spade-bench compare` on fabricated runs: identical, consistent, inconsistent, could not judge,
the refusals, the numerics diff, and a report folder (summary.json only) as either side."""
from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from cli import app
from fake_runs import make_run
from reports.bootstrap import BootstrapSettings
from reports.build import build_report
from reports.collect import ReportError
from spade_bench.config import config_hash
from reports.compare import (CANNOT_JUDGE, CONSISTENT, EXIT_CANNOT_JUDGE, EXIT_INCONSISTENT, EXIT_OK,
                             IDENTICAL, INCONSISTENT, NO_SPREAD, compare)

FAST = BootstrapSettings(replicates=200, fid_replicates=40)
METRICS = ("miou", "pixel_accuracy", "fid", "kid")


def _runs(root, real_stats, quality=0.35, seeds=(0, 1, 2), variants=("spade",), **kwargs):
    for variant in variants:
        for seed in seeds:
            make_run(root, variant, seed, quality=quality, real_stats=real_stats, **kwargs)
    return root


def _answers(result, variant="spade"):
    return {j.metric: j.answer for j in result.judgements if j.variant == variant}


def _set_numerics(run, eval_state, train_state=None):
    metrics_path = run / "eval" / "metrics.json"
    record = json.loads(metrics_path.read_text())
    record["numerics"] = eval_state
    metrics_path.write_text(json.dumps(record))
    (run / "env.json").write_text(json.dumps({"numerics": train_state or eval_state}))


def test_the_same_runs_are_identical_from_run_folders_and_from_the_report(tmp_path, real_stats):
    ref = _runs(tmp_path / "ref", real_stats, variants=("spade", "concat"))
    result = compare([ref], [ref])
    assert result.exit_code == EXIT_OK and result.overall == "identical"
    assert _answers(result) == dict.fromkeys(METRICS, IDENTICAL)
    # The committed form: a report folder ships summary.json and no run folders.
    report = tmp_path / "report"
    build_report([ref], report, settings=FAST, figures=False, progress=False)
    summary = json.loads((report / "summary.json").read_text())
    stored = summary["datasets"]["synthetic"]["replicates"]
    assert stored["stored"] == 200 and set(stored["by_variant"]) == {"spade", "concat"}
    assert len(stored["by_variant"]["spade"]["miou"].split()) == 200
    assert len(stored["by_variant"]["spade"]["fid"].split()) == 40
    assert len(json.dumps(stored)) < 4 * 2 * 1_700            # 2 variants x 4 metrics, 200 (FID 40) numbers
    for new, reference in (([ref], [report]), ([report], [ref]), ([report], [report / "summary.json"])):
        result = compare(new, reference)
        assert result.exit_code == EXIT_OK, result.text()
        assert _answers(result, "concat") == dict.fromkeys(METRICS, IDENTICAL)


def test_a_rerun_that_lands_elsewhere_is_consistent_and_a_real_change_is_not(tmp_path, real_stats):
    ref = _runs(tmp_path / "ref", real_stats)
    rerun = _runs(tmp_path / "rerun", real_stats, quality=0.351)   # other noise, same quality
    result = compare([rerun], [ref])
    assert _answers(result) == dict.fromkeys(METRICS, CONSISTENT), result.text()
    assert result.exit_code == EXIT_OK and result.overall == "consistent"
    miou = next(j for j in result.judgements if j.metric == "miou")
    assert miou.interval.method == "pooled seeds (t) + images" and miou.interval.low < 0 < miou.interval.high
    # One seed rerun against three: the reference's spread judges it.
    one = tmp_path / "one"
    shutil.copytree(rerun / "spade-s0", one / "spade-s0")
    assert _answers(compare([one], [ref])) == dict.fromkeys(METRICS, CONSISTENT)
    # A run much worse than its reference is inconsistent, from the report folder too.
    changed = _runs(tmp_path / "changed", real_stats, quality=0.05)
    report = tmp_path / "report"
    build_report([ref], report, settings=FAST, figures=False, progress=False)
    for reference in (ref, report):
        result = compare([changed], [reference])
        assert result.exit_code == EXIT_INCONSISTENT, result.text()
        assert _answers(result)["miou"] == INCONSISTENT and _answers(result)["fid"] == INCONSISTENT


def test_one_seed_a_side_with_other_values_cannot_be_judged(tmp_path, real_stats):
    ref = _runs(tmp_path / "ref", real_stats, seeds=(0,))
    new = _runs(tmp_path / "new", real_stats, seeds=(0,), quality=0.351)
    result = compare([new], [ref])
    assert result.exit_code == EXIT_CANNOT_JUDGE
    assert {j.answer for j in result.judgements} == {CANNOT_JUDGE}
    assert NO_SPREAD in result.text() and "rerun with --seeds 0,1" in result.text()


def test_numerics_fields_that_differ_are_named(tmp_path, real_stats):
    ref = _runs(tmp_path / "ref", real_stats)
    new = tmp_path / "new"
    shutil.copytree(ref, new)
    for run in ref.iterdir():
        _set_numerics(run, {"cpu_capability": "AVX2", "torch_threads": 2, "onednn_max_cpu_isa": "AVX2"})
    for run in new.iterdir():
        _set_numerics(run, {"cpu_capability": "AVX512", "torch_threads": 2, "mkl_cbwr": "COMPATIBLE"})
    result = compare([new], [ref])
    assert result.exit_code == EXIT_OK                     # the values are the same bits
    fields = result.differences["numerics-state fields"]
    assert fields == {"env.json: cpu_capability": [["AVX2"], ["AVX512"]],
                      "metrics.json: cpu_capability": [["AVX2"], ["AVX512"]]}
    one_sided = result.one_sided["numerics-state fields"]
    assert one_sided["reference"] == ["env.json: onednn_max_cpu_isa", "metrics.json: onednn_max_cpu_isa"]
    assert one_sided["new"] == ["env.json: mkl_cbwr", "metrics.json: mkl_cbwr"]
    text = result.text()
    assert "metrics.json: cpu_capability: reference AVX2 vs new AVX512" in text
    assert "recorded on the new side only: env.json: mkl_cbwr" in text
    # The same fields reach a report's summary.json, and compare reads them from there.
    report = tmp_path / "report"
    build_report([ref], report, settings=FAST, figures=False, progress=False)
    assert compare([new], [report]).differences["numerics-state fields"] == fields


def test_other_experiments_and_protocols_are_refused_naming_what_differs(tmp_path, real_stats):
    ref = _runs(tmp_path / "ref", real_stats)
    new = _runs(tmp_path / "new", real_stats, quality=0.351)
    for run in new.iterdir():
        config = json.loads((run / "config.json").read_text())
        config["optim"]["lr"] = 0.002
        (run / "config.json").write_text(json.dumps(config))
        metrics = json.loads((run / "eval" / "metrics.json").read_text())
        metrics["run"]["config_hash"] = config_hash(config)       # trained and scored so
        (run / "eval" / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(ReportError, match=r"spade: optim.lr: 0.0002 \(reference spade/seed0\) vs 0.002 "
                                          r"\(new spade/seed0\).*--allow-diff KEY"):
        compare([new], [ref])
    assert compare([new], [ref], allow_diff=["optim.lr"]).exit_code == EXIT_OK
    other = _runs(tmp_path / "other", real_stats, protocol={"segmenter_sha256": "c" * 64})
    with pytest.raises(ReportError, match="segmenter_sha256.*reference spade/seed0.*new spade/seed0"):
        compare([other], [ref])


def test_old_summary_and_missing_reference_variant(tmp_path, real_stats):
    ref = _runs(tmp_path / "ref", real_stats)
    report = tmp_path / "report"
    build_report([ref], report, settings=FAST, figures=False, progress=False)
    summary = json.loads((report / "summary.json").read_text())
    for run in summary["runs"]:
        del run["values"]
    (report / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ReportError, match="written before summary.json kept per-run values.*spade-bench report"):
        compare([ref], [report])
    concat = _runs(tmp_path / "concat", real_stats, variants=("concat",))
    result = compare([concat], [ref])
    assert result.exit_code == EXIT_CANNOT_JUDGE and "reference has no evaluated concat runs" in result.text()


def test_cli_exit_codes_and_json(tmp_path, real_stats):
    ref = _runs(tmp_path / "ref", real_stats)
    changed = _runs(tmp_path / "changed", real_stats, quality=0.05)
    runner = CliRunner()
    result = runner.invoke(app, ["compare", str(ref), "--reference", str(ref)])
    assert result.exit_code == 0 and "overall: identical (exit 0)" in result.output
    out = tmp_path / "compare.json"
    result = runner.invoke(app, ["compare", str(changed), "--reference", str(ref), "--json", str(out)])
    assert result.exit_code == 1 and "mIoU: inconsistent" in result.output
    assert json.loads(out.read_text())["overall"] == "inconsistent"
    result = runner.invoke(app, ["compare", str(tmp_path / "nowhere"), "--reference", str(ref)])
    assert result.exit_code == 2 and "does not exist" in result.output
