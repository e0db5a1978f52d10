"""Checkpoints that survive one bad file, and the output-folder and config errors around training."""
from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest
import torch

from spade_bench import checkpoint as ckpt
from spade_bench.config import resolve, save_config
from spade_bench.errors import CheckpointError, ConfigError, StorageError, TrainingError
from spade_bench.distributed import DistInfo
from spade_bench.engine import build_networks
from spade_bench.trainer import Trainer, load_saved_config

TINY = [
    "generator.ngf=8", "generator.spade_hidden=16", "discriminator.ndf=8", "discriminator.n_layers=2",
    "loss.perceptual=none", "train.batch_size=2", "train.steps=3", "train.decay_steps=1",
    "train.log_every=1", "train.sample_every=100", "train.checkpoint_every=1", "train.keep_checkpoints=3",
    "data.synthetic_train_size=6", "data.synthetic_val_size=2", "data.num_workers=0", "data.crop_size=32",
    "data.load_size=36",
]


def tiny_cfg(*extra: str):
    return resolve("spade", preset="smoke", overrides=TINY + list(extra))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ckpt") / "run"
    Trainer(tiny_cfg(), run, progress=False).fit()
    return run


def copy_run(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out, symlinks=True)
    return out


def test_step_files_are_independent_checksummed_and_weights_only(finished_run):
    steps = ckpt.list_step_checkpoints(finished_run)
    assert [s for s, _ in steps] == [1, 2, 3]
    latest = ckpt.latest_path(finished_run)
    assert latest.is_symlink() and latest.resolve() == steps[-1][1].resolve()
    assert all(p.stat().st_nlink == 1 for _, p in steps)          # no hard link shared with latest
    state = torch.load(latest, weights_only=True)                    # RNG states and config are plain
    assert len(state["checksum"]) == 64 and ckpt.content_checksum(state) == state["checksum"]


def test_corrupt_newest_is_reported_and_the_previous_one_used(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    newest = ckpt.step_path(run, 3)
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF                                     # one flipped byte inside a tensor
    newest.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="step_0000003.pt"):
        ckpt.load_checkpoint(newest)
    cfg = tiny_cfg()
    with pytest.warns(UserWarning, match=r"skipped a corrupt checkpoint.*step_0000003\.pt.*resuming from .*step_0000002"):
        trainer = Trainer(cfg, run, resume=True, progress=False)
    assert trainer.step == 2


def test_resume_from_step_and_errors(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    with pytest.warns(UserWarning, match=r"newer checkpoints \(2, 3\) were moved"):
        trainer = Trainer(tiny_cfg(), run, resume_from=1, progress=False)
    assert trainer.step == 1 and [s for s, _ in ckpt.list_step_checkpoints(run)] == [1]
    assert (run / "checkpoints" / "superseded-1" / "step_0000003.pt").is_file()      # nothing deleted
    with pytest.raises(CheckpointError, match=r"no checkpoint for step 7 .*available steps: 1"):
        Trainer(tiny_cfg(), run, resume_from=7, progress=False)
    with pytest.raises(CheckpointError, match="has no checkpoint to resume from"):
        Trainer(tiny_cfg(), tmp_path / "fresh", resume=True, require_checkpoint=True, progress=False)


def test_config_json_deleted_and_finished_run(finished_run, tmp_path):
    from typer.testing import CliRunner

    from cli import app

    run = copy_run(finished_run, tmp_path)
    (run / "config.json").unlink()
    with pytest.warns(UserWarning, match="config.json is missing; using the config stored in"):
        assert load_saved_config(run) == tiny_cfg()
    # Other options than the saved config: the refusal names the keys.
    with pytest.raises(CheckpointError, match=r"differs from the checkpoint in generator\.ngf \(generator\.ngf: saved 8"):
        Trainer(tiny_cfg("generator.ngf=16"), run, resume=True, progress=False)
    # Plain --resume of the finished run: no "nan img/s".
    result = CliRunner().invoke(app, ["train", "--out", str(run), "--resume"])
    assert result.exit_code == 0, result.output
    assert "nothing to do" in result.output and "already finished its 3 steps" in result.output
    assert "nan" not in result.output
    missing = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "none"), "--resume"])
    assert missing.exit_code != 0 and "no config.json and no checkpoints" in missing.output


def test_batch_size_zero_is_a_config_error():
    with pytest.raises(ConfigError, match=r"train\.batch_size must be >= 1, got 0"):
        tiny_cfg("train.batch_size=0")


def test_unwritable_output_folder_is_caught_before_training(tmp_path, monkeypatch):
    """We run as root, where chmod 555 does not stop writes, so a read-only folder is simulated
    two ways: a run folder whose parent is a regular file, and a write probe that fails with
    EROFS (what a read-only mount gives)."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match=r"file/run: cannot be used as the run folder: .*is a file"):
        Trainer(tiny_cfg(), tmp_path / "file" / "run", progress=False)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("spade_bench.io.tempfile.mkstemp", read_only)
    with pytest.raises(StorageError, match=r"run: the run folder is not writable \(Read-only file system\)"):
        Trainer(tiny_cfg(), tmp_path / "run", progress=False)


def test_full_disk_names_the_bytes_and_keeps_the_old_checkpoint(finished_run, tmp_path, monkeypatch):
    run = copy_run(finished_run, tmp_path)
    trainer = Trainer(tiny_cfg(), run, resume=True, progress=False)
    trainer._start_time = 0.0

    def full(obj, f, *args, **kwargs):
        f.write(b"part of a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    trainer.step = 4
    with pytest.raises(StorageError, match=r"no space left: .*step_0000004\.pt needs \d+ bytes"):
        trainer.save()
    monkeypatch.undo()
    assert ckpt.load_checkpoint(ckpt.latest_path(run))["step"] == 3

    monkeypatch.setattr("spade_bench.io.free_bytes", lambda folder: 10)
    with pytest.raises(StorageError, match=r"no space left: .*needs \d+ bytes .* but has 10 bytes"):
        Trainer(tiny_cfg(), tmp_path / "other", progress=False)


def test_threads_setting(monkeypatch):
    from spade_bench.distributed import DistInfo, available_cores, resolve_threads

    assert resolve_threads(3) == 3
    cores = available_cores()
    assert 1 <= cores <= (torch.multiprocessing.cpu_count() or cores)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert resolve_threads(0) == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert resolve_threads(0, DistInfo(rank=1, world_size=2)) == max(1, cores // 2)
    with pytest.raises(ConfigError, match="train.threads"):
        tiny_cfg("train.threads=-1")


def test_fit_trains_on_its_threads_and_restores_the_callers(tmp_path):
    """train.threads holds while fit() runs and is put back after: a run must not leave its
    thread count to whatever the process does next (an evaluator trained after it, say)."""
    seen = []
    torch.set_num_threads(2)
    try:
        Trainer(tiny_cfg("train.threads=1", "train.steps=1"), tmp_path / "run", progress=False,
                hooks=[lambda event, trainer: seen.append(torch.get_num_threads())]).fit()
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


def test_cityscapes_smoke_keeps_its_aspect_ratio():
    with pytest.warns(UserWarning, match=r"crop_size 64 -> 128 .*aspect ratio 2"):
        cfg = resolve("spade", preset="smoke", dataset="cityscapes", root="/data/cityscapes")
    assert cfg.data.image_size == (64, 128)


def test_older_format_is_named_and_can_be_upgraded(tmp_path):
    import random

    import numpy as np

    old = {"step": 3, "generator": {"w": torch.ones(2)}, "data_position": (0, 3),
           "rng": [{"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}]}
    path = tmp_path / "step_0000003.pt"
    torch.save(old, path)
    with pytest.raises(CheckpointError, match="older format .*upgrade_checkpoint"):
        ckpt.load_checkpoint(path)
    ckpt.upgrade_checkpoint(path)
    state = ckpt.load_checkpoint(path)
    ckpt.set_rng_state(state["rng"][0])
    assert np.array_equal(np.random.get_state()[1], old["rng"][0]["numpy"][1])
    assert random.getstate() == old["rng"][0]["python"]


def test_checkpoint_without_schedules_resumes_at_the_schedules_lr():
    """An upgraded older checkpoint has no LR schedule state: resuming puts both schedules (and
    the optimisers' lr) where an uninterrupted run is after the same number of steps."""
    cfg = resolve("spade", preset="smoke", overrides=["train.steps=10", "train.decay_steps=6",
                                                      "loss.perceptual=none"])
    straight = build_networks(cfg, DistInfo(), torch.device("cpu"), False)
    for _ in range(7):
        for opt, sched in ((straight.optim_G, straight.sched_G), (straight.optim_D, straight.sched_D)):
            opt.step()
            sched.step()
    state = straight.state_dict()
    for opt in ("optim_G", "optim_D"):  # the older trainer's optimiser lr: the previous step's
        for group in state[opt]["param_groups"]:
            group["lr"] = 123.0
    state["sched_G"] = state["sched_D"] = None
    resumed = build_networks(cfg, DistInfo(), torch.device("cpu"), False)
    resumed.load_state_dict(state, 7)
    for opt, sched in (("optim_G", "sched_G"), ("optim_D", "sched_D")):
        assert getattr(resumed, opt).param_groups[0]["lr"] == getattr(straight, opt).param_groups[0]["lr"]
        assert getattr(resumed, sched).last_epoch == getattr(straight, sched).last_epoch == 7


# ----------------------------------------------------------------------------- issue 21: refusals

class _Payload:
    """What a crafted checkpoint carries: unpickling it runs code (here: it creates a marker file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def _payload_checkpoint(path: Path, marker: Path) -> Path:
    """A checkpoint whose weights_only error text mentions numpy (its first foreign global is
    numpy's, as in an older spade-bench checkpoint), followed by a payload."""
    import random

    import numpy as np

    torch.save({"step": 3, "rng": [{"numpy": np.random.get_state(), "python": random.getstate()}],
                "generator": {"w": torch.ones(2)}, "extra": _Payload(marker)}, path)
    return path


def test_a_payload_checkpoint_is_refused_and_never_unpickled(tmp_path):
    """At 6b04d6e the refusal of such a file advised `upgrade_checkpoint`, which unpickled it."""
    from typer.testing import CliRunner

    from cli import app

    marker = tmp_path / "payload-ran"
    path = _payload_checkpoint(tmp_path / "step_0000003.pt", marker)
    with pytest.raises(CheckpointError) as info:
        ckpt.load_checkpoint(path)
    message = str(info.value)
    assert f"checkpoint {path} refused: not a plain-tensor file" in message
    assert "upgrade_checkpoint" not in message and "trust" not in message and "weights_only=False" not in message
    with pytest.raises(CheckpointError, match="refused: not a plain-tensor file"):
        ckpt.upgrade_checkpoint(path)                       # what the old message told people to run
    assert not marker.exists()

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(path, run / "checkpoints" / "step_0000003.pt")
    (run / "checkpoints" / "latest.pt").symlink_to("step_0000003.pt")
    save_config(tiny_cfg(), run / "config.json")
    result = CliRunner().invoke(app, ["eval", "--run", str(run), "--device", "cpu", "--metric", "fid"])
    assert result.exit_code == 2 and "refused: not a plain-tensor file" in result.stderr
    assert "Traceback" not in result.output and "upgrade_checkpoint" not in result.output
    assert not marker.exists()


def test_a_payload_newest_checkpoint_is_skipped_as_refused_not_corrupt(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    marker = tmp_path / "payload-ran"
    _payload_checkpoint(ckpt.step_path(run, 3), marker)
    with pytest.warns(UserWarning) as caught:
        trainer = Trainer(tiny_cfg(), run, resume=True, progress=False)
    assert trainer.step == 2 and not marker.exists()
    skipped = [str(w.message) for w in caught if "skipped" in str(w.message)]
    assert len(skipped) == 1 and skipped[0].startswith("skipped a refused checkpoint: ")
    assert "refused: not a plain-tensor file" in skipped[0] and "corrupt" not in skipped[0]
    assert skipped[0].endswith(f"resuming from {ckpt.step_path(run, 2)}")


def test_every_saved_network_is_checked_for_non_finite_values(tmp_path):
    """At 6b04d6e the check skipped the EMA: ema_decay 100 saved a NaN EMA, and synth wrote black images."""
    trainer = Trainer(tiny_cfg("train.ema=true"), tmp_path / "run", progress=False, with_data=False)
    with torch.no_grad():
        next(trainer.engine.nets.ema.parameters()).fill_(float("nan"))
    with pytest.raises(TrainingError, match=r"non-finite weights at step 0 \(ema .* holds NaN or infinity\); not "
                                            r"writing a checkpoint \(no checkpoint had been written\)"):
        trainer.save()
    assert not ckpt.has_checkpoint(tmp_path / "run")


def _edited_config(run: Path, section: str, key: str, value) -> None:
    import json

    record = json.loads((run / "config.json").read_text())
    record[section][key] = value
    (run / "config.json").write_text(json.dumps(record))


def test_a_hand_edited_config_json_is_not_scored_as_the_run(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    _edited_config(run, "generator", "modulation", "gamma")
    with pytest.raises(CheckpointError, match=r"another config than .*config\.json \(generator\.modulation: "
                                              r"checkpoint 'one_plus_gamma', config\.json 'gamma'\)"):
        ckpt.load_generator(run)
    run2 = copy_run(finished_run, tmp_path / "ngf")
    _edited_config(run2, "generator", "ngf", 16)             # at 6b04d6e: a RuntimeError traceback
    with pytest.raises(CheckpointError, match=r"generator\.ngf: checkpoint 8, config\.json 16"):
        ckpt.load_generator(run2)


def test_a_checkpoint_of_another_variant_in_the_folder_is_refused(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    other = resolve("concat", preset="smoke", overrides=TINY)
    Trainer(other, tmp_path / "concat", progress=False, with_data=False).save()
    shutil.copy(ckpt.step_path(tmp_path / "concat", 0), ckpt.step_path(run, 9))
    with pytest.raises(CheckpointError, match=r"generator\.arch: checkpoint 'concat', config\.json 'spade'"):
        ckpt.load_generator(run, checkpoint="9")


def test_a_checkpoint_of_another_shape_is_one_line(finished_run, tmp_path):
    import numpy as np
    from PIL import Image
    from typer.testing import CliRunner

    from cli import app

    run = copy_run(finished_run, tmp_path)
    state = ckpt.load_checkpoint(ckpt.latest_path(run))
    del state["config"], state["checksum"]                  # no config to compare: the tensors decide
    key = next(k for k, v in state["generator"].items() if v.ndim == 4)
    state["generator"][key] = torch.zeros(3, 3, 1, 1)
    ckpt.save_checkpoint(run, 9, state, keep=5)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "label.png")
    result = CliRunner().invoke(app, ["synth", "--run", str(run), "--label", str(tmp_path / "label.png"),
                                      "--out", str(tmp_path / "out.png"), "--checkpoint", "9", "--device", "cpu"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{key} (checkpoint (3, 3, 1, 1), network" in result.stderr and "step_0000009.pt" in result.stderr
    assert not (tmp_path / "out.png").exists()


# ----------------------------------------------------------------------------- learning-curve checkpoints

@pytest.mark.parametrize("steps,points,expected", [(200, 4, [50, 100, 150, 200]), (10, 3, [3, 7, 10]),
                                                   (2, 5, [1, 2]), (200, 0, []), (7, 1, [7])])
def test_curve_steps_are_evenly_spaced_and_end_at_the_last(steps, points, expected):
    assert ckpt.curve_steps(steps, points) == expected


def test_pruning_keeps_the_curve_checkpoints(tmp_path):
    """checkpoint_every 1 and keep 1 would leave only the newest; eval.curve_points=3 over 6
    steps keeps steps 2, 4 and 6 besides it, and a run without the key keeps what it did."""
    cfg = tiny_cfg("train.steps=6", "train.keep_checkpoints=1", "eval.curve_points=3")
    Trainer(cfg, tmp_path / "curve", progress=False).fit()
    assert [s for s, _ in ckpt.list_step_checkpoints(tmp_path / "curve")] == [2, 4, 6]
    # The curve's checkpoints are written even off the checkpoint interval.
    Trainer(tiny_cfg("train.steps=6", "train.checkpoint_every=5", "train.keep_checkpoints=1",
                     "eval.curve_points=3"), tmp_path / "off", progress=False).fit()
    assert [s for s, _ in ckpt.list_step_checkpoints(tmp_path / "off")] == [2, 4, 6]
    Trainer(tiny_cfg("train.steps=6", "train.keep_checkpoints=1"), tmp_path / "plain", progress=False).fit()
    assert [s for s, _ in ckpt.list_step_checkpoints(tmp_path / "plain")] == [6]
