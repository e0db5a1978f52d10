"""The GAN step engine: its phases, EMA, non-finite tracking, and that a training run is the
engine's steps and nothing else (what `bench` times and `import-nvlabs` builds on)."""
from __future__ import annotations

import contextlib

import pytest
import torch

from spade_bench.config import resolve
from spade_bench.data import build_dataset
from spade_bench.data.order import TrainBatches
from spade_bench.distributed import DistInfo, torch_threads, unwrap
from spade_bench.engine import PHASES, GANEngine
from spade_bench.errors import TrainingError
from spade_bench.trainer import Trainer

TINY = [
    "generator.ngf=8", "generator.spade_hidden=16", "discriminator.ndf=8", "discriminator.n_layers=2",
    "loss.perceptual=none", "train.batch_size=2", "train.steps=4", "train.decay_steps=2",
    "train.log_every=1", "train.sample_every=1", "train.checkpoint_every=1", "train.keep_checkpoints=1",
    "data.synthetic_train_size=6", "data.synthetic_val_size=2", "data.num_workers=0", "data.crop_size=32",
    "data.load_size=36",
]


def tiny_cfg(*extra: str, variant: str = "spade"):
    return resolve(variant, preset="smoke", overrides=TINY + list(extra))


def first_batch(engine: GANEngine):
    cfg = engine.cfg
    batches = TrainBatches(build_dataset(cfg.data, "train"), cfg.train.batch_size, cfg.train.seed, DistInfo())
    return engine.prepare(next(iter(batches)))


@pytest.mark.parametrize("ema", [True, False])
def test_one_iteration_runs_the_named_phases_in_order(ema):
    engine = GANEngine(tiny_cfg(f"train.ema={str(ema).lower()}"))
    seen = []

    def record(name):
        seen.append(name)
        return contextlib.nullcontext()

    engine.phase = record
    segmap, image = first_batch(engine)
    engine.generator_step(segmap, image)
    engine.update_ema()
    engine.discriminator_step(segmap, image)
    assert seen == [p for p in PHASES if ema or p != "EMA"]


def test_ema_follows_the_generator_after_its_step():
    cfg = tiny_cfg("train.ema=true", "train.ema_decay=0.9")
    engine = GANEngine(cfg)
    segmap, image = first_batch(engine)
    before = [p.detach().clone() for p in engine.ema.parameters()]
    engine.generator_step(segmap, image)
    engine.update_ema()
    generator = unwrap(engine.generator)
    for old, new, trained in zip(before, engine.ema.parameters(), generator.parameters()):
        assert torch.allclose(new, old + 0.1 * (trained - old), rtol=0, atol=1e-6)
    assert any(not torch.equal(old, new) for old, new in zip(before, engine.ema.parameters()))
    for mine, theirs in zip(engine.ema.buffers(), generator.buffers()):
        assert torch.equal(mine, theirs)


def test_the_first_nonfinite_loss_is_kept_with_its_step():
    engine = GANEngine(tiny_cfg())
    finite = {"G/gan": torch.tensor(1.0), "D/real": torch.tensor(0.5)}
    engine.track_finite(finite, step=0)
    assert engine.first_nonfinite() is None
    engine.track_finite({"G/gan": torch.tensor(1.0), "D/real": torch.tensor(float("inf"))}, step=4)
    engine.track_finite({"G/gan": torch.tensor(float("nan")), "D/real": torch.tensor(0.5)}, step=5)
    assert engine.first_nonfinite() == (5, "D/real")   # steps counted from 1, as the log counts them
    assert engine.weights_finite()
    with torch.no_grad():
        next(unwrap(engine.discriminator).parameters()).view(-1)[0] = float("nan")
    assert not engine.weights_finite()


def test_a_networks_only_trainer_refuses_to_train(tmp_path):
    trainer = Trainer(tiny_cfg(), tmp_path / "run", progress=False, with_data=False)
    with pytest.raises(TrainingError, match="with_data=False"):
        trainer.fit()
    assert not (tmp_path / "run").exists()


def _drive_engine(cfg) -> GANEngine:
    """The training loop without the run lifecycle: the Trainer's set-up order, then the steps."""
    engine = GANEngine(cfg)
    tc = cfg.train
    batches = TrainBatches(build_dataset(cfg.data, "train"), tc.batch_size, tc.seed, DistInfo())
    build_dataset(cfg.data, "val")
    for step, batch in zip(range(tc.steps), batches):
        segmap, image = engine.prepare(batch)
        if step % tc.d_steps_per_g == 0:
            engine.generator_step(segmap, image)
            engine.update_ema()
        engine.discriminator_step(segmap, image)
        engine.step_schedules()
    return engine


def test_a_training_run_is_the_engines_steps_and_nothing_else(tmp_path):
    """Checkpoints, loss logs and sample grids at every step leave the numbers alone: a Trainer run
    ends bit-identical to driving the engine by hand (two D steps per G step, EMA on)."""
    cfg = tiny_cfg("train.ema=true", "train.d_steps_per_g=2", "train.threads=1")
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    trainer.fit()
    assert len(list((tmp_path / "run" / "samples").iterdir())) == cfg.train.steps
    with torch_threads(1):
        by_hand = _drive_engine(cfg)
    for name in ("generator", "discriminator", "ema", "optim_G", "optim_D"):
        ours, theirs = trainer.engine.state_dict()[name], by_hand.state_dict()[name]
        if name.startswith("optim"):
            ours, theirs = ours["state"], theirs["state"]
            flat = [(f"{i}.{k}", v, theirs[i][k]) for i, st in ours.items() for k, v in st.items()]
        else:
            flat = [(k, v, theirs[k]) for k, v in ours.items()]
        assert flat and all(torch.equal(a, b) for _, a, b in flat), name
    assert trainer.engine.learning_rates() == by_hand.learning_rates()
