"""Finding and reading run directories: failed and unevaluated runs are kept, with a reason."""
from __future__ import annotations

import json

import pytest

from fake_runs import make_run
from reports.collect import ReportError, collect_runs, find_run_dirs, load_run


def test_finds_runs_below_a_parent_and_accepts_a_run_itself(ablation_runs):
    runs = find_run_dirs([ablation_runs])
    assert len(runs) == 9
    assert find_run_dirs([ablation_runs / "spade-s0"]) == [ablation_runs / "spade-s0"]
    # A run and its parent together give each run once.
    assert len(find_run_dirs([ablation_runs, ablation_runs / "spade-s0"])) == 9


def test_records_carry_variant_seed_dataset_and_values(ablation_runs):
    records = collect_runs([ablation_runs])
    spade = [r for r in records if r.variant == "spade"]
    assert [r.seed for r in spade] == [0, 1, 2]
    assert all(r.ok and r.dataset == "synthetic" for r in spade)
    metrics = json.loads((ablation_runs / "spade-s1" / "eval" / "metrics.json").read_text())
    assert spade[1].value("miou") == pytest.approx(metrics["metrics"]["miou"])
    assert spade[1].value("generator_params") == 1_200_000
    assert spade[1].value("fid_train_vs_val") == 5.0
    assert spade[1].file("real_stats").name == "real_stats.npz"


def test_failed_run_is_kept_with_its_error(ablation_runs):
    failed = [r for r in collect_runs([ablation_runs]) if not r.ok]
    assert [(r.variant, r.seed) for r in failed] == [("pix2pixhd", 2)]
    assert failed[0].error == "TrainingError: non-finite loss at step 100"
    assert failed[0].metrics is None


def test_failed_status_wins_over_a_stale_metrics_file(tmp_path, real_stats):
    run = make_run(tmp_path, "spade", 0, real_stats=real_stats)
    summary = json.loads((run / "train_summary.json").read_text())
    (run / "train_summary.json").write_text(json.dumps({**summary, "status": "failed", "error": "boom"}))
    record = load_run(run)
    assert (record.status, record.error) == ("failed", "boom")


@pytest.mark.parametrize("problem, expected", [
    ("missing", "not evaluated"),
    ("garbled", "not readable JSON"),
    ("schema", "schema 2"),
])
def test_unusable_metrics_make_a_failed_record(tmp_path, real_stats, problem, expected):
    run = make_run(tmp_path, "concat", 1, real_stats=real_stats)
    path = run / "eval" / "metrics.json"
    if problem == "missing":
        path.unlink()
    elif problem == "garbled":
        path.write_text('{"schema": 1, "metr')
    else:
        path.write_text(json.dumps({**json.loads(path.read_text()), "schema": 2}))
    record = load_run(run)
    assert not record.ok and expected in record.error
    assert (record.variant, record.seed) == ("concat", 1)  # still named from config.json


def test_running_run_with_metrics_is_used_with_a_note(tmp_path, real_stats):
    run = make_run(tmp_path, "spade", 0, real_stats=real_stats, status="running")
    record = load_run(run)
    assert record.ok and "running" in record.notes[0]


def test_empty_missing_and_non_run_paths_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "other" / "deep").mkdir(parents=True)
    (tmp_path / "other" / "notes.txt").write_text("hello")
    with pytest.raises(ReportError, match="no run directories in"):
        find_run_dirs([tmp_path / "empty"])
    with pytest.raises(ReportError, match="no run directories in"):
        find_run_dirs([tmp_path / "other"])
    with pytest.raises(ReportError, match="does not exist"):
        find_run_dirs([tmp_path / "nope"])
    with pytest.raises(ReportError, match="is a file"):
        find_run_dirs([tmp_path / "other" / "notes.txt"])
