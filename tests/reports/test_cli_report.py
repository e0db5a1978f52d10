"""`spade-bench report` through typer's CliRunner: files written, clear errors, non-zero exits."""
from __future__ import annotations

from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def test_report_command_writes_md_csv_tex_png(ablation_runs, tmp_path):
    out = tmp_path / "reports" / "smoke"
    result = runner.invoke(app, ["report", str(ablation_runs), "--out", str(out),
                                 "--bootstrap", "100", "--fid-bootstrap", "20"])
    assert result.exit_code == 0, result.output
    assert "report of 9 runs (1 failed)" in result.output
    assert "pix2pixhd/seed2" in result.output  # the failed pair is named, not dropped
    for name in ("ablation.md", "ablation.csv", "ablation.tex", "summary.json"):
        assert (out / name).stat().st_size > 0
    assert len(list((out / "figures").glob("*.png"))) == 3


def test_report_default_out_is_reports_slash_runs_name(ablation_runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["report", str(ablation_runs), "-B", "50", "--fid-bootstrap", "10"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "reports" / ablation_runs.name / "ablation.md").is_file()


def test_empty_or_non_run_directory_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.png").write_bytes(b"not a run")
    for target in ("empty", "photos", "missing"):
        result = runner.invoke(app, ["report", str(tmp_path / target), "--out", str(tmp_path / "out")])
        assert result.exit_code != 0
        assert result.output.startswith("error: ")
        assert len(result.output.strip().splitlines()) == 1  # one line, no traceback
        assert str(tmp_path / target) in result.output
    assert not (tmp_path / "out").exists()


def test_report_needs_runs_argument():
    result = runner.invoke(app, ["report"])
    assert result.exit_code != 0
