"""The config hash survives new fields: only values that differ from the schema's defaults are
hashed, runs saved before a field existed resume, and a changed experiment value is still refused."""
from __future__ import annotations

import json
import pytest
import torch

from spade_bench import checkpoint as ckpt
from spade_bench import config
from spade_bench.config import apply_overrides, config_hash, experiment_diff, hash_names_config, resolve, to_dict
from spade_bench.errors import CheckpointError, ConfigError
from spade_bench.trainer import train_run

TINY = [
    "generator.ngf=8", "generator.spade_hidden=16", "discriminator.ndf=8", "discriminator.n_layers=2",
    "loss.perceptual=none", "train.batch_size=2", "train.steps=4", "train.decay_steps=2",
    "train.log_every=1", "train.sample_every=4", "train.checkpoint_every=2", "train.keep_checkpoints=5",
    "train.deterministic=true", "data.synthetic_train_size=8", "data.synthetic_val_size=4", "data.num_workers=0",
]


def tiny_cfg(*extra: str):
    return resolve("spade", preset="smoke", overrides=TINY + list(extra))


def test_only_values_that_differ_from_the_defaults_are_hashed():
    cfg = tiny_cfg()
    saved = to_dict(cfg)
    assert config_hash(saved) == config_hash(cfg)
    # A saved config that lacks a key whose value is the default hashes the same.
    default_ttur = config.OptimConfig().ttur
    assert cfg.optim.ttur == default_ttur
    del saved["optim"]["ttur"]
    assert config_hash(saved) == config_hash(cfg) and not experiment_diff(saved, cfg)
    # Setting a key to its default value is no change; any other value is.
    assert config_hash(apply_overrides(cfg, [f"optim.ttur={not default_ttur}"])) != config_hash(cfg)
    assert config_hash(apply_overrides(cfg, ["generator.ngf=16"])) != config_hash(cfg)
    assert config_hash(apply_overrides(cfg, ["train.log_every=7", "eval.batch_size=3"])) == config_hash(cfg)


def test_adding_a_field_with_a_default_changes_no_hash(add_config_field):
    before = to_dict(tiny_cfg())            # what a run saved before the field existed
    key = add_config_field()
    assert key.split(".")[1] not in before["train"]
    cfg = tiny_cfg()                          # the same experiment under the new schema
    assert getattr(cfg.train, key.split(".")[1]) == 0
    assert config_hash(cfg) == config_hash(before) and not experiment_diff(before, cfg)
    changed = tiny_cfg(f"{key}=5")
    assert config_hash(changed) != config_hash(before)
    assert experiment_diff(before, changed) == {key: (0, 5)}


def test_hash_names_config_recognises_older_hashes_only_of_the_same_config(old_config_hash):
    cfg = tiny_cfg()
    other = apply_overrides(cfg, ["optim.lr=0.001"])
    saved = to_dict(cfg)
    assert old_config_hash(saved) != config_hash(saved)          # the rule did change
    assert hash_names_config(old_config_hash(saved), saved)      # an older run's record still names its config
    assert hash_names_config(config_hash(cfg), saved)
    assert not hash_names_config(old_config_hash(to_dict(other)), saved)
    assert not hash_names_config(config_hash(other), saved)
    assert not hash_names_config(None, saved) and not hash_names_config("", saved)


def _as_written_by_older_code(run_dir, old_config_hash) -> None:
    """Rewrite the run's checkpoints as the code before the default-only rule wrote them: the
    config_hash they record is the old rule's."""
    for step, path in ckpt.list_step_checkpoints(run_dir):
        state = ckpt.load_checkpoint(path)
        state["config_hash"] = old_config_hash(state["config"])
        ckpt.save_checkpoint(run_dir, step, {k: v for k, v in state.items() if k != "checksum"}, keep=10)


def test_a_run_saved_before_a_field_was_added_resumes_exactly(tmp_path, add_config_field, old_config_hash):
    straight, old = tmp_path / "straight", tmp_path / "old"
    cfg = tiny_cfg()
    train_run(cfg, straight, progress=False)
    train_run(cfg, old, progress=False)
    _as_written_by_older_code(old, old_config_hash)

    # A later version adds a field; the old run continues from its step-2 checkpoint.
    key = add_config_field()
    saved = json.loads((old / "config.json").read_text())
    assert key.split(".")[1] not in saved["train"] and key.split(".")[1] not in \
        ckpt.load_checkpoint(ckpt.step_path(old, 2))["config"]["train"]
    resumed_cfg = tiny_cfg()
    assert ckpt.load_checkpoint(ckpt.step_path(old, 2))["config_hash"] != config_hash(resumed_cfg)
    result = train_run(resumed_cfg, old, resume=True, resume_from=2, require_checkpoint=True, progress=False)
    assert result.step == 4
    a, b = ckpt.load_checkpoint(ckpt.step_path(straight, 4)), ckpt.load_checkpoint(ckpt.step_path(old, 4))
    for net in ("generator", "discriminator"):
        assert all(torch.equal(a[net][k], b[net][k]) for k in a[net]), f"{net} differs after the resume"
    assert key.split(".")[1] in json.loads((old / "config.json").read_text())["train"]


def test_a_changed_experiment_value_is_still_refused_on_resume(tmp_path, add_config_field):
    run = tmp_path / "run"
    cfg = tiny_cfg("train.steps=2", "train.decay_steps=1")
    train_run(cfg, run, progress=False)
    key = add_config_field()
    for change in ("optim.lr=0.001", f"{key}=5"):
        changed = tiny_cfg("train.steps=2", "train.decay_steps=1", change)
        assert config_hash(changed) != config_hash(cfg)
        key = change.split("=")[0]
        with pytest.raises(CheckpointError, match=f"refusing to resume .*{key.replace('.', r'[.]')}"):
            train_run(changed, run, resume=True, require_checkpoint=True, progress=False)
        # Without config.json the checkpoint's own config is compared: refused as well.
        (run / "config.json").rename(run / "config.json.aside")
        try:
            with pytest.raises(CheckpointError, match=f"refusing to resume from .*{key.replace('.', r'[.]')}"):
                train_run(changed, run, resume=True, require_checkpoint=True, progress=False)
        finally:
            (run / "config.json.aside").rename(run / "config.json")
    with pytest.raises(ConfigError, match="train.warmup_steps: expected an integer"):
        tiny_cfg(f"{key}=soon")
