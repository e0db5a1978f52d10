"""`ablate --launcher local`: two smoke pairs at once (one CPU core each) through submitit's
local executor, then the report. One job gets SIGTERM mid-training: it checkpoints, is
requeued through submitit, resumes, and ends with the weights of an uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from runners.launch import pair_statuses
from spade_bench import checkpoint as ckpt
from spade_bench.trainer import load_saved_config, train_run

pytest.importorskip("submitit")

STEPS = 8
TINY = ["generator.ngf=8", "generator.spade_hidden=8", "discriminator.ndf=8", "discriminator.n_layers=2",
        "loss.perceptual=none", "train.batch_size=2", f"train.steps={STEPS}", "train.decay_steps=4",
        "train.log_every=1", f"train.checkpoint_every={STEPS}", f"train.sample_every={STEPS}",
        "data.num_workers=0", "data.synthetic_train_size=8", "data.synthetic_val_size=4",
        "data.max_val_images=4", "eval.batch_size=4", "eval.kid_subsets=2"]


def _logged_step(run_dir: Path) -> int:
    try:
        lines = (run_dir / "logs" / "losses.jsonl").read_text().splitlines()
        return json.loads(lines[-1])["step"] if lines else 0
    except (OSError, ValueError, IndexError):
        return 0


def _preempt_when_training(out: Path, seen: dict, deadline_s: float = 240) -> None:
    """Watch spade-s0; once it has logged two steps, read --status and SIGTERM its job."""
    run_dir, end = out / "spade-s0", time.time() + deadline_s
    try:
        while time.time() < end:
            manifest = out / "sweep.json"
            if manifest.is_file() and _logged_step(run_dir) >= 2:
                job_id = json.loads(manifest.read_text())["pairs"][0]["job_id"]
                if job_id:
                    seen["status"] = [st.line() for st in pair_statuses(out)]
                    seen["step"] = _logged_step(run_dir)
                    os.kill(int(job_id), signal.SIGTERM)   # the local controller forwards it to the task
                    seen["job_id"] = job_id
                    return
            time.sleep(0.1)
    except Exception as e:  # noqa: BLE001 - reported by the test's assertions
        seen["error"] = repr(e)


@pytest.mark.slow
def test_two_local_pairs_at_once_one_preempted_and_requeued_then_report(tmp_path):
    out, report = tmp_path / "runs", tmp_path / "report"
    args = ["ablate", "--preset", "smoke", "--variants", "spade", "--seeds", "0,1", "--out", str(out),
            "--report", str(report), "--segmenter-steps", "2", "--device", "cpu", "--launcher", "local",
            "--max-parallel", "2"]
    for item in TINY:
        args += ["--set", item]
    seen: dict = {}
    watcher = threading.Thread(target=_preempt_when_training, args=(out, seen), daemon=True)
    watcher.start()
    result = CliRunner().invoke(app, args)
    watcher.join(timeout=5)
    assert result.exit_code == 0, result.output
    assert "error" not in seen and "job_id" in seen, seen

    # Both pairs ran at once, each on its own core.
    manifest = json.loads((out / "sweep.json").read_text())
    cores = [p["resources"] for p in manifest["pairs"]]
    assert len(set(cores)) == 2 and all(c.startswith("CPU cores") for c in cores), cores
    # Mid-run status: the preempted pair was running, with its step.
    assert any(line.startswith("spade seed 0: running: step ") and f"/{STEPS}" in line
               for line in seen["status"]), seen["status"]

    # The job caught SIGTERM, checkpointed, was requeued by submitit (same job id) and resumed.
    log = out / ".submitit"
    job_out = (log / f"{seen['job_id']}_0_log.out").read_text()
    assert "SIGTERM at step" in job_out and "requeueing through submitit" in job_out
    assert "Requeued job" in job_out and job_out.count("Starting with JobEnvironment") == 2
    run_dir = out / "spade-s0"
    steps = [json.loads(ln)["step"] for ln in (run_dir / "logs" / "losses.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1))

    # Bit-exact: the same config trained without interruption ends with the same weights
    # (on one thread, as the job's one-core slot: the thread count changes float sums).
    reference = tmp_path / "uninterrupted"
    cfg = load_saved_config(run_dir)
    train_run(replace(cfg, train=replace(cfg.train, threads=1)), reference, progress=False)
    resumed = ckpt.load_checkpoint(ckpt.latest_path(run_dir))
    straight = ckpt.load_checkpoint(ckpt.latest_path(reference))
    assert resumed["step"] == straight["step"] == STEPS
    for net in ("generator", "discriminator"):
        for key, value in straight[net].items():
            assert torch.equal(value, resumed[net][key]), f"{net}.{key} differs after the requeue"

    # Both pairs scored, and the report lists both.
    assert all(st.state == "finished" for st in pair_statuses(out))
    table = (report / "ablation.md").read_text()
    assert "2 runs (2 evaluated, 0 failed)" in table
    status = CliRunner().invoke(app, ["ablate", "--status", str(out)])
    assert status.exit_code == 0 and status.output.splitlines()[-1] == "2 pairs: 2 finished", status.output
