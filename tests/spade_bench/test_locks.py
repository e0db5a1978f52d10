"""Issue 21, cause "no run-folder lock": two `train` on one --out, two `eval` of one run and two
`ablate` into one folder each ran as if alone (one run's output lost, a score of mixed images, every
pair trained twice). One lock helper (spade_bench.locks: a file with pid and host) guards run, eval
and sweep folders; a stale lock (its pid is dead on this host) is named and `--break-lock` clears it."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
TINY = ["--preset", "smoke", "--set", "generator.ngf=8", "--set", "train.steps=2", "--set", "train.decay_steps=1",
        "--set", "loss.perceptual=none", "--set", "data.synthetic_train_size=4", "--set", "data.synthetic_val_size=2",
        "--set", "data.crop_size=32", "--set", "data.load_size=32", "--set", "train.checkpoint_every=1"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(path: Path, pid: int, host: str = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": "2024-01-01 00:00:00",
                                "command": "spade-bench train --out elsewhere"}))


@pytest.fixture
def live_holder():
    """A process that is alive for the test's duration (the holder of a lock)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_the_lock_names_its_holder_and_is_released(tmp_path, live_holder):
    from spade_bench.errors import LockError
    from spade_bench.locks import acquire, folder_lock, read_lock

    lock = tmp_path / "run" / ".lock"
    with folder_lock(lock, "run folder"):
        held = read_lock(lock)
        assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
        with pytest.raises(LockError, match=rf"in use: the run folder is locked by pid {os.getpid()} on "):
            acquire(lock, "run folder")
    assert not lock.exists() and not lock.parent.exists()   # the folder it made, empty: removed again
    _write_lock(lock, live_holder)
    with pytest.raises(LockError, match=rf"pid {live_holder} .*wait for it to finish"):
        acquire(lock, "run folder", break_lock=True)           # a live holder here is never broken
    assert read_lock(lock)["pid"] == live_holder


def test_a_stale_lock_is_named_and_break_lock_clears_it(tmp_path):
    from spade_bench.errors import LockError
    from spade_bench.locks import acquire, read_lock, release

    lock = tmp_path / ".lock"
    dead = _dead_pid()
    _write_lock(lock, dead)
    with pytest.raises(LockError) as info:
        acquire(lock, "run folder")
    message = str(info.value)
    assert f"stale lock" in message and f"pid {dead}" in message and "no longer running" in message
    assert "--break-lock" in message and str(lock) in message
    record = acquire(lock, "run folder", break_lock=True)
    assert read_lock(lock)["pid"] == os.getpid()
    release(lock, record)
    lock.write_text("")                                         # killed while taking the lock
    with pytest.raises(LockError, match="unreadable lock file"):
        acquire(lock, "run folder")


def test_train_into_a_folder_in_use_is_refused_and_writes_nothing(tmp_path, live_holder):
    run = tmp_path / "run"
    _write_lock(run / ".lock", live_holder)
    result = runner.invoke(app, ["train", *TINY, "--out", str(run)])
    assert result.exit_code == 2 and f"pid {live_holder}" in result.stderr and "in use" in result.stderr
    assert sorted(p.name for p in run.iterdir()) == [".lock"]       # no config.json, no checkpoint


def test_train_with_a_stale_lock_names_it_and_break_lock_trains(tmp_path):
    run = tmp_path / "run"
    dead = _dead_pid()
    _write_lock(run / ".lock", dead)
    refused = runner.invoke(app, ["train", *TINY, "--out", str(run)])
    assert refused.exit_code == 2 and "stale lock" in refused.stderr and f"pid {dead}" in refused.stderr
    assert "--break-lock" in refused.stderr
    done = runner.invoke(app, ["train", *TINY, "--out", str(run), "--break-lock"])
    assert done.exit_code == 0, done.output
    assert (run / "checkpoints" / "latest.pt").is_file() and not (run / ".lock").exists()


def test_two_trainers_on_one_out_at_once_one_is_refused(tmp_path):
    """The case of the issue, with two real processes: at 6b04d6e both printed done. The second
    starts once the first holds the folder, and while it trains (60 steps)."""
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "cli", "train", *TINY, "--set", "train.steps=60", "--set", "train.decay_steps=1",
           "--out", str(run)]
    first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (run / ".lock").exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    first_out, first_err = first.communicate(timeout=600)
    assert first.returncode == 0, first_err
    assert second.returncode == 2, second.stderr
    assert "in use" in second.stderr and f"run folder is locked by pid {first.pid}" in second.stderr
    assert "done: 60 steps" in first_out and "done" not in second.stdout


def test_a_second_ablate_into_one_folder_is_refused_before_any_pair(tmp_path, monkeypatch, live_holder):
    from runners import ablate
    from spade_bench.errors import LockError

    calls = []
    monkeypatch.setattr(ablate, "ensure_segmenter", lambda sweep, echo=print: calls.append("segmenter"))
    monkeypatch.setattr(ablate, "run_pair", lambda *a, **k: calls.append("pair") or "finished")
    monkeypatch.setattr(ablate, "build_sweep_report", lambda sweep: calls.append("report") or sweep.report_out)
    out = tmp_path / "runs"
    _write_lock(out / ".lock", live_holder)
    with pytest.raises(LockError, match=rf"sweep folder is locked by pid {live_holder}"):
        ablate.run_ablation(variants=("spade",), seeds=(0,), preset="smoke", out=out,
                            report_out=tmp_path / "report", device="cpu")
    assert calls == []
    (out / ".lock").unlink()
    ablate.run_ablation(variants=("spade",), seeds=(0,), preset="smoke", out=out, report_out=tmp_path / "report",
                        device="cpu")
    assert calls == ["segmenter", "pair", "report"] and not (out / ".lock").exists()


def test_a_failed_train_leaves_no_folder_behind(tmp_path):
    """No output written: a run that fails before its first record leaves no empty run folder."""
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", *TINY, "--dataset", "folder", "--root", str(tmp_path / "no-such-data"),
                                 "--out", str(run)])
    assert result.exit_code == 2 and "no-such-data" in result.stderr
    assert not run.exists()
