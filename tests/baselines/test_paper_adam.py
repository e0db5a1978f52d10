"""spade-paper-adam: Adam beta2 = 0.999 (the paper) against the code's 0.9; TTUR sets only
the learning rates, so explicit betas reach the optimisers (SPADE issue #50)."""
from __future__ import annotations

from spade_bench.config import RunConfig, apply_overrides, resolve
from spade_bench.trainer import Trainer

TINY = ["generator.ngf=8", "generator.spade_hidden=16", "discriminator.ndf=8", "discriminator.n_layers=2",
        "loss.perceptual=none", "train.batch_size=2", "train.steps=2", "train.decay_steps=1",
        "data.synthetic_train_size=4", "data.synthetic_val_size=2", "data.num_workers=0"]


def test_ttur_keeps_explicit_betas():
    cfg = apply_overrides(RunConfig(), ["optim.beta1=0.5", "optim.beta2=0.95"])
    assert cfg.optim.ttur
    assert cfg.optim.betas == (0.5, 0.95)
    assert (cfg.optim.lr_G, cfg.optim.lr_D) == (1e-4, 4e-4)
    assert RunConfig().optim.betas == (0.0, 0.9)  # the original code's values under TTUR


def test_paper_adam_reaches_both_optimisers(tmp_path):
    for variant, beta2 in (("spade", 0.9), ("spade-paper-adam", 0.999)):
        cfg = resolve(variant, preset="smoke", overrides=TINY)
        trainer = Trainer(cfg, tmp_path / variant, progress=False)
        for optimiser, lr in ((trainer.engine.optim_G, 1e-4), (trainer.engine.optim_D, 4e-4)):
            group = optimiser.param_groups[0]
            assert group["betas"] == (0.0, beta2)
            assert abs(group["lr"] - lr) < 1e-12
