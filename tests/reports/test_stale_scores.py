"""Issue 21: a report must not show scores that are not the run's. metrics.json of another checkpoint
step (a run trained again into a folder with an old eval/), of another config (config.json edited
since), or of other images than eval/images holds (an evaluation killed part way) was reported as
the run's; a metrics.json with sections of the wrong type was a traceback. Each is now refused with
its reason: the run is listed as not evaluated, the report is still written."""
from __future__ import annotations

import hashlib
import json

import pytest

from fake_runs import make_run
from reports.bootstrap import BootstrapSettings
from reports.build import build_report
from reports.collect import load_run

FAST = BootstrapSettings(replicates=50, fid_replicates=10)


def _rewrite(path, edit):
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))


def test_scores_of_an_earlier_training_are_refused(tmp_path, real_stats):
    run = make_run(tmp_path, "spade", 0, real_stats=real_stats, steps=200)
    assert load_run(run).ok
    # Trained again into the same folder, to 400 steps; eval/ still holds the scores of step 200.
    _rewrite(run / "config.json", lambda c: c["train"].update(steps=400))
    _rewrite(run / "train_summary.json", lambda s: s.update(step=400))
    record = load_run(run)
    assert not record.ok and record.metrics is None
    assert "scores checkpoint step 200, but the run trained to step 400" in record.error
    assert f"spade-bench eval --run {run}" in record.error


def test_scores_under_another_config_are_refused(tmp_path, real_stats):
    run = make_run(tmp_path, "spade", 0, real_stats=real_stats)
    _rewrite(run / "config.json", lambda c: c["generator"].update(modulation="gamma"))
    record = load_run(run)
    assert not record.ok and "was scored under another config" in record.error and "config.json" in record.error


def test_scores_of_other_images_than_eval_holds_are_refused(tmp_path, real_stats):
    """SIGKILL during eval: the new generation manifest and images, the old metrics.json."""
    run = make_run(tmp_path, "spade", 0, real_stats=real_stats)
    old = {"checkpoint_step": 200, "seed": 0}
    _rewrite(run / "eval" / "metrics.json", lambda m: m["protocol"].update(
        generation_manifest_sha256=hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()))
    (run / "eval" / "images" / "generation.json").write_text(json.dumps(old))
    assert load_run(run).ok
    (run / "eval" / "images" / "generation.json").write_text(json.dumps({"checkpoint_step": 400, "seed": 0}))
    record = load_run(run)
    assert not record.ok and "was scored from other images than" in record.error


@pytest.mark.parametrize("key, value, named", [
    ("protocol", "s", "'protocol' is a str, not an object"),
    ("label_dependence", "x", "'label_dependence' is a str, not an object"),
    ("files", 3, "'files' is an int, not an object"),
    ("code", 3, "'code' is an int, not an object"),
    ("warnings", 5, "'warnings' is an int, not a list"),
    ("checkpoint_step", "200", "'checkpoint_step' is '200', not a step number"),
    ("metrics.fid", "abc", "'metrics.fid' is 'abc', not a number or null"),
])
def test_a_metrics_json_of_wrong_types_is_a_failed_row_not_a_traceback(tmp_path, real_stats, key, value, named):
    root = tmp_path / "runs"
    run = make_run(root, "spade", 0, real_stats=real_stats)
    make_run(root, "concat", 0, real_stats=real_stats, quality=0.2)

    def edit(m):
        if key.startswith("metrics."):
            m["metrics"][key.split(".", 1)[1]] = value
        else:
            m[key] = value

    _rewrite(run / "eval" / "metrics.json", edit)
    result = build_report([root], tmp_path / "report", settings=FAST, figures=False, progress=False)
    assert result["runs"] == 2 and result["failed"] == 1
    assert named in result["markdown"].read_text()
