"""Learning curves: the curve's checkpoints are scored with the final evaluation's protocol,
recorded in RUN/eval/curve.json, and never scored twice."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import eval.curve as curve_module
from eval.curve import points_to_score, score_curve
from eval.harness import evaluate_run
from eval.segmenter import train_segmenter
from runners.ablate import curve_to_score, pair_is_done
from spade_bench.checkpoint import step_path
from spade_bench.config import load_config_file, resolve
from spade_bench.run_folder import RunFolder
from spade_bench.trainer import Trainer

TINY = ["generator.ngf=8", "generator.spade_hidden=8", "discriminator.ndf=8", "discriminator.n_layers=2",
        "loss.perceptual=none", "train.batch_size=2", "train.steps=6", "train.decay_steps=3",
        "train.log_every=1", "train.sample_every=100", "train.checkpoint_every=100", "train.keep_checkpoints=1",
        "data.synthetic_train_size=8", "data.synthetic_val_size=6", "data.max_val_images=6",
        "data.num_workers=0", "eval.batch_size=6", "eval.curve_points=3"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, list[str]]:
    """A 6-step run with a 3-point curve, and a 2-step segmenter (the eval override a sweep passes)."""
    root = tmp_path_factory.mktemp("curve")
    cfg = resolve("spade", preset="smoke", overrides=TINY)
    Trainer(cfg, root / "run", progress=False).fit()
    segmenter = root / "segmenter.pt"
    train_segmenter(cfg, segmenter, steps=2, batch_size=4, device="cpu", progress=False)
    return root / "run", [f"eval.segmenter={segmenter}"]


def copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out, symlinks=True)
    return out


def test_curve_points_share_the_final_protocol(trained, tmp_path):
    run, overrides = copy(trained[0], tmp_path), trained[1]
    final = evaluate_run(run, metric="miou", overrides=overrides, device="cpu", progress=False)
    curve = score_curve(run, 3, overrides=overrides, device="cpu", progress=False)
    assert curve == json.loads(RunFolder(run).curve.read_text())
    assert curve["steps"] == [2, 4, 6] and curve["missing"] == {}
    assert curve["metrics"] == ["miou", "pixel_accuracy"]
    records = [point["record"] for point in curve["points"]]
    assert records == ["curve/step_0000002/metrics.json", "curve/step_0000004/metrics.json", "metrics.json"]
    for point in curve["points"]:
        record = json.loads((RunFolder(run).eval / point["record"]).read_text())
        assert record["checkpoint_step"] == point["step"]
        assert point["protocol"] == {k: final["protocol"].get(k) for k in point["protocol"]}
        assert point["protocol"]["segmenter_sha256"] == final["protocol"]["segmenter_sha256"]
        assert point["references"]["real_val_miou"] == pytest.approx(final["references"]["real_val_miou"])
    assert curve["points"][-1]["metrics"]["miou"] == final["metrics"]["miou"]
    # The checkpoints differ, so the points do: a curve, not one score repeated.
    assert len({point["metrics"]["miou"] for point in curve["points"]}) > 1
    # The final step scored as a curve point gives metrics.json's number: the same protocol.
    again = evaluate_run(run, metric="miou", checkpoint="6", overrides=overrides, device="cpu", progress=False,
                         out=tmp_path / "final-as-point")
    assert again["metrics"]["miou"] == final["metrics"]["miou"]


def test_finished_points_are_not_scored_again(trained, tmp_path, monkeypatch):
    run, overrides = copy(trained[0], tmp_path), trained[1]
    cfg = load_config_file(run / "config.json")
    assert curve_to_score(run, cfg) == [2, 4, 6] and not pair_is_done(run, cfg)
    first = score_curve(run, 3, overrides=overrides, device="cpu", progress=False)
    assert first["points"][-1]["record"] == "curve/step_0000006/metrics.json"   # no metrics.json yet
    assert points_to_score(run, 3) == [] and curve_to_score(run, cfg) == []
    # FID was not scored: asking for it makes every point to do again.
    assert points_to_score(run, 3, "miou,fid") == [2, 4, 6]

    def no_scoring(*args, **kwargs):
        raise AssertionError("a finished curve point was scored again")

    monkeypatch.setattr(curve_module, "evaluate_run", no_scoring)
    assert score_curve(run, 3, overrides=overrides, device="cpu", progress=False) == first

    # A curve step without its checkpoint (pruned, or trained before eval.curve_points) is named.
    step_path(run, 2).unlink()
    shutil.rmtree(RunFolder(run).curve_point(2))
    assert points_to_score(run, 3) == []
    curve = score_curve(run, 3, overrides=overrides, device="cpu", progress=False)
    assert [p["step"] for p in curve["points"]] == [4, 6]
    assert "no checkpoint step_0000002.pt" in curve["missing"]["2"]


def test_a_point_scored_under_another_protocol_is_scored_again(trained, tmp_path):
    run, overrides = copy(trained[0], tmp_path), trained[1]
    score_curve(run, 3, overrides=overrides, device="cpu", progress=False)
    path = RunFolder(run).curve_point(4) / "metrics.json"
    record = json.loads(path.read_text())
    record["protocol"]["segmenter_sha256"] = "0" * 64        # as if scored by another evaluator
    path.write_text(json.dumps(record))
    evaluate_run(run, metric="miou", overrides=overrides, device="cpu", progress=False)
    assert points_to_score(run, 3) == [4]


def test_the_curve_waits_for_no_one_else_s_evaluation(trained, tmp_path):
    """score_curve holds RUN/eval/.lock like evaluate_run: while another live process scores the
    run, it is refused with the holder's name and writes nothing; a stale lock is cleared only
    with break_lock."""
    import subprocess
    import sys

    from spade_bench.errors import LockError
    from spade_bench.locks import own_record

    run, overrides = copy(trained[0], tmp_path), trained[1]
    lock = RunFolder(run).eval_lock
    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(json.dumps({**own_record(), "pid": holder.pid, "process_start": None,
                                    "command": "spade-bench eval --run elsewhere"}))
        with pytest.raises(LockError, match="in use.*spade-bench eval --run elsewhere"):
            score_curve(run, 3, overrides=overrides, device="cpu", progress=False)
        assert not RunFolder(run).curve.exists() and not RunFolder(run).curve_point(2).exists()
    finally:
        holder.kill()
        holder.wait()
    with pytest.raises(LockError, match="stale lock"):
        score_curve(run, 3, overrides=overrides, device="cpu", progress=False)
    curve = score_curve(run, 3, overrides=overrides, device="cpu", progress=False, break_lock=True)
    assert len(curve["points"]) == 3 and not lock.exists()


def test_a_sweep_pair_scores_its_curve_once(trained, tmp_path, monkeypatch):
    """runners.ablate.run_pair scores the curve after the final evaluation; a relaunch that still
    has metrics to score (FID is left out here to keep the test cheap) leaves the curve alone."""
    import runners.ablate as ablate

    run, overrides = copy(trained[0], tmp_path), trained[1]
    segmenter = overrides[0].split("=", 1)[1]
    cfg = load_config_file(run / "config.json")
    monkeypatch.setattr(ablate, "evaluate_run", lambda run_dir, metric, **kwargs:
                        evaluate_run(run_dir, metric="miou", **kwargs))
    assert ablate.run_pair(cfg, run, segmenter, "cpu") == "finished"
    curve = json.loads(RunFolder(run).curve.read_text())
    assert [p["record"] for p in curve["points"]][-1] == "metrics.json" and len(curve["points"]) == 3
    assert curve_to_score(run, cfg) == []
    monkeypatch.setattr(curve_module, "evaluate_run", lambda *a, **k: pytest.fail("curve point scored again"))
    assert ablate.run_pair(cfg, run, segmenter, "cpu") == "finished"


def test_eval_cli_scores_the_curve(trained, tmp_path):
    from typer.testing import CliRunner

    from cli import app

    run, overrides = copy(trained[0], tmp_path), trained[1]
    result = CliRunner().invoke(app, ["eval", "--run", str(run), "--metric", "miou", "--device", "cpu",
                                      "--set", overrides[0], "--set", "eval.curve_points=3"])
    assert result.exit_code == 0, result.output
    assert "learning curve: 3 of 3 points (miou, pixel_accuracy)" in result.output
    assert RunFolder(run).curve.is_file()
