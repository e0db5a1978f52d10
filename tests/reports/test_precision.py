"""Precision comparison: within-noise verdicts from two runs' loss logs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from reports.collect import ReportError
from reports.precision import build, compare, read_losses


def write_log(run, values):
    (run / "logs").mkdir(parents=True)
    rows = [{"step": i + 1, "G/total": float(g), "D/total": float(d)} for i, (g, d) in enumerate(values)]
    (run / "logs" / "losses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_gap_within_and_beyond_noise(tmp_path):
    rng = np.random.default_rng(0)
    base = np.stack([5 + rng.normal(0, 0.5, 40), 1 + rng.normal(0, 0.1, 40)], axis=1)
    shifted = base.copy()
    shifted[:, 0] += 0.1   # G: well inside its 0.5 noise
    shifted[:, 1] += 1.0   # D: ten times its 0.1 noise
    write_log(tmp_path / "a", base)
    write_log(tmp_path / "b", shifted)
    stats = compare(read_losses(tmp_path / "a"), read_losses(tmp_path / "b"))
    assert stats["G/total"]["within_noise"] is True
    assert stats["D/total"]["within_noise"] is False
    assert stats["D/total"]["gap"] == pytest.approx(1.0)
    md = build(tmp_path / "a", tmp_path / "b", tmp_path / "out")
    assert "beyond noise" in md.read_text() and (tmp_path / "out" / "loss_curves.png").stat().st_size > 0


def test_mismatched_steps_and_missing_logs_are_errors(tmp_path):
    write_log(tmp_path / "a", np.ones((5, 2)))
    write_log(tmp_path / "b", np.ones((6, 2)))
    with pytest.raises(ReportError, match="different steps"):
        compare(read_losses(tmp_path / "a"), read_losses(tmp_path / "b"))
    with pytest.raises(ReportError, match="losses.jsonl"):
        read_losses(tmp_path / "missing")


def test_seed_reference_widens_the_noise(tmp_path):
    base = np.stack([np.full(20, 5.0), np.full(20, 1.0)], axis=1)
    write_log(tmp_path / "a", base)
    write_log(tmp_path / "b", base + [0.0, 0.3])      # D moves by 0.3; its step noise is 0
    write_log(tmp_path / "ref", base + [0.0, -0.5])   # another seed moves D by 0.5
    a, b, ref = (read_losses(tmp_path / n) for n in ("a", "b", "ref"))
    assert compare(a, b)["D/total"]["within_noise"] is False
    with_ref = compare(a, b, reference=ref)["D/total"]
    assert with_ref["within_noise"] is True and with_ref["seed_gap"] == pytest.approx(0.5)


def test_precision_command(tmp_path):
    from typer.testing import CliRunner

    from cli import app

    base = np.stack([np.full(20, 5.0), np.full(20, 1.0)], axis=1)
    write_log(tmp_path / "a", base)
    write_log(tmp_path / "b", base + [0.0, 0.3])
    write_log(tmp_path / "ref", base + [0.0, -0.5])
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["precision", str(tmp_path / "a"), str(tmp_path / "b"),
                                      "--reference", str(tmp_path / "ref"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "precision.json").read_text())["D/total"]["within_noise"] is True
    assert (out / "loss_curves.png").stat().st_size > 0
    missing = CliRunner().invoke(app, ["precision", str(tmp_path / "a"), str(tmp_path / "nope"),
                                       "--out", str(out)])
    assert missing.exit_code != 0 and missing.output.startswith("error: ")
    assert "nope has no logs/losses.jsonl" in missing.output
