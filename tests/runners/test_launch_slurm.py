"""`ablate --launcher slurm` without a cluster: stand-in sbatch, srun and sacct on PATH record
what submitit would submit. The sbatch scripts must carry the command line's partition,
time, GPUs per pair, array size and parallel cap; --status reads the run folders and
sacct's job states."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from spade_bench.config import config_hash, load_config_file
from spade_bench.metrics import list_metrics

pytest.importorskip("submitit")

TINY = ["generator.ngf=8", "generator.spade_hidden=8", "discriminator.ndf=8", "discriminator.n_layers=2",
        "loss.perceptual=none", "train.batch_size=2", "train.steps=4", "train.decay_steps=1",
        "data.synthetic_train_size=8"]


def _script(path: Path, text: str) -> None:
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def fake_cluster(tmp_path, monkeypatch):
    """sbatch saves each script and answers with the next job id; sacct prints SACCT."""
    bin_dir, scripts = tmp_path / "bin", tmp_path / "sbatch-scripts"
    bin_dir.mkdir()
    scripts.mkdir()
    counter = tmp_path / "next-id"
    counter.write_text("1001")
    _script(bin_dir / "sbatch", f'id=$(cat {counter}); echo $((id + 1)) > {counter}\n'
                                f'cp "$1" {scripts}/$id.sh\necho "Submitted batch job $id"\n')
    _script(bin_dir / "srun", "exit 0\n")
    sacct = tmp_path / "sacct.txt"
    sacct.write_text("JobID|State|NodeList\n")
    _script(bin_dir / "sacct", f"cat {sacct}\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return scripts, sacct


def slurm_args(out: Path, *extra: str) -> list[str]:
    args = ["ablate", "--preset", "smoke", "--variants", "spade,concat", "--seeds", "0,1,2", "--out", str(out),
            "--launcher", "slurm", "--gpus-per-pair", "2", "--max-parallel", "3", "--slurm-partition", "gpu",
            "--slurm-time", "1-12:00:00", "--slurm-account", "proj42", "--slurm-extra", "qos=high",
            "--slurm-extra", "cpus-per-task=10", *extra]
    for item in TINY:
        args += ["--set", item]
    return args


def sbatch_lines(path: Path) -> set[str]:
    return {ln for ln in path.read_text().splitlines() if ln.startswith("#SBATCH")}


def test_slurm_submission_carries_the_command_line_then_status_reads_folders_and_sacct(tmp_path, fake_cluster,
                                                                                       monkeypatch):
    scripts, sacct = fake_cluster
    out = tmp_path / "runs"
    monkeypatch.setenv("SPADE_BENCH_CACHE", str(tmp_path / "cache"))   # no evaluator yet: it is a job

    dry = CliRunner().invoke(app, slurm_args(out, "--dry-run"))
    assert dry.exit_code == 0, dry.output
    pair_lines = [ln for ln in dry.output.splitlines() if " seed " in ln]
    assert len(pair_lines) == 6 and all("2 GPU(s)" in ln and "partition gpu" in ln for ln in pair_lines)
    assert not list(scripts.iterdir()) and not out.exists()   # nothing submitted, nothing written

    result = CliRunner().invoke(app, slurm_args(out))
    assert result.exit_code == 0, result.output
    # Evaluator job 1001 (no evaluator cached yet), the pair array 1002, the report job 1003.
    assert sorted(p.name for p in scripts.iterdir()) == ["1001.sh", "1002.sh", "1003.sh"]
    evaluator, array, report = (sbatch_lines(scripts / f"{i}.sh") for i in (1001, 1002, 1003))
    assert {"#SBATCH --array=0-5%3", "#SBATCH --partition=gpu", "#SBATCH --time=2160",
            "#SBATCH --gpus-per-node=2", "#SBATCH --ntasks-per-node=2", "#SBATCH --nodes=1",
            "#SBATCH --account=proj42", "#SBATCH --qos=high", "#SBATCH --cpus-per-task=10",
            "#SBATCH --signal=USR1@180", "#SBATCH --dependency=afterok:1001"} <= array
    assert "export SUBMITIT_PREEMPT_SIGNAL=USR1" in (scripts / "1002.sh").read_text()
    assert "#SBATCH --gpus-per-node=1" in evaluator and not any("--array" in ln for ln in evaluator)
    assert "#SBATCH --dependency=afterany:1002" in report      # failed pairs are reported too
    assert not any("gpus" in ln or "--array" in ln for ln in report)

    manifest = json.loads((out / "sweep.json").read_text())
    assert [p["job_id"] for p in manifest["pairs"]] == [f"1002_{i}" for i in range(6)]
    assert manifest["segmenter_job"] == "1001" and manifest["report_job"] == "1003"

    # Half-way: one pair evaluated, one training, one killed for memory, one Python failure, two queued.
    pairs = {(p["variant"], p["seed"]): Path(p["run_dir"]) for p in manifest["pairs"]}
    done, running, oom, crashed = (pairs[("spade", 0)], pairs[("spade", 1)], pairs[("spade", 2)],
                                   pairs[("concat", 0)])
    for run_dir, status in ((done, "finished"), (running, "running"), (oom, "running")):
        (run_dir / "train_summary.json").write_text(json.dumps({"status": status, "step": 4 if done == run_dir else 0}))
    (done / "eval").mkdir()
    # Scores of the final checkpoint under the pair's own config (pair_is_done's rule).
    done_hash = config_hash(load_config_file(done / "config.json"))
    # Every registered metric at this code's version: a pair lacking one is still to be scored.
    (done / "eval" / "metrics.json").write_text(json.dumps({
        "checkpoint_step": 4, "run": {"config_hash": done_hash},
        "metrics": {m.name: 1.0 for m in list_metrics()} | {"fid": 123.4, "miou": 5.6},
        "protocol": {"metric_versions": {m.name: m.version_string() for m in list_metrics()}}}))
    (running / "logs").mkdir()
    (running / "logs" / "losses.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    (crashed / "train_summary.json").write_text(json.dumps({"status": "failed", "error": "TrainingError: non-finite loss"}))
    sacct.write_text("JobID|State|NodeList\n1002_0|COMPLETED|n1\n1002_1|RUNNING|n1\n1002_2|OUT_OF_MEMORY|n2\n"
                     "1002_3|FAILED|n2\n1002_[4-5%3]|PENDING|None Assigned\n")

    status = CliRunner().invoke(app, ["ablate", "--status", str(out)])
    assert status.exit_code == 0, status.output
    lines = status.output.splitlines()
    assert "spade seed 0: finished: fid 123.4, miou 5.6 [job 1002_0]" in lines
    assert any(ln.startswith("spade seed 1: running: step 2/4") and "RUNNING" in ln for ln in lines)
    assert any(ln.startswith("spade seed 2: failed: job ended in state OUT_OF_MEMORY") for ln in lines)
    assert any(ln.startswith("concat seed 0: failed: TrainingError: non-finite loss") for ln in lines)
    assert sum(ln.startswith(("concat seed 1: pending", "concat seed 2: pending")) for ln in lines) == 2
    assert lines[-1] == "6 pairs: 2 failed, 1 finished, 2 pending, 1 running"


@pytest.mark.parametrize("args, message", [
    (["--launcher", "slurm"], "needs --slurm-time"),
    (["--launcher", "slurm", "--slurm-time", "2 days"], "--slurm-time '2 days'"),
    (["--launcher", "local", "--slurm-partition", "gpu"], "only apply with --launcher slurm"),
    (["--launcher", "slurm", "--slurm-time", "60", "--slurm-extra", "=x"], "--slurm-extra '=x'"),
])
def test_bad_launch_options_fail_with_the_fix(tmp_path, args, message):
    result = CliRunner().invoke(app, ["ablate", "--preset", "smoke", "--out", str(tmp_path), "--dry-run", *args])
    assert result.exit_code == 2 and message in result.output, result.output
