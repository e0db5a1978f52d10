"""`ablate` on a CPU runs pairs side by side in worker processes (cores // train.threads at a time):
the same numbers as one after another, failures recorded as before, and a pinned config keeps its
own thread count in a local launcher's slot."""
from __future__ import annotations

import json

import pytest
import torch

import runners.launch as launch
from runners.ablate import (EVALUATOR_PROGRESS, evaluator_progress, evaluator_progress_writer, pair_parallelism,
                            plan_sweep, run_ablation)
from spade_bench.distributed import available_cores

TINY = ["generator.ngf=8", "generator.spade_hidden=8", "discriminator.ndf=8", "discriminator.n_layers=2",
        "loss.perceptual=none", "train.batch_size=2", "train.steps=3", "train.decay_steps=1",
        "train.log_every=1", "train.checkpoint_every=3", "data.synthetic_train_size=8",
        "data.synthetic_val_size=4", "data.max_val_images=4", "eval.batch_size=4", "eval.kid_subsets=2"]


def test_parallelism_is_the_cores_over_the_threads(tmp_path, monkeypatch):
    sweep = plan_sweep(variants=("spade", "concat"), seeds=(0, 1), preset="smoke", out=tmp_path, overrides=TINY,
                       device="cpu")
    cores = available_cores()
    assert pair_parallelism(sweep) == cores           # smoke: one thread a pair
    assert pair_parallelism(sweep, max_parallel=1) == 1
    two = plan_sweep(variants=("spade",), seeds=(0,), preset="smoke", out=tmp_path, device="cpu",
                     overrides=TINY + ["train.threads=2"])
    assert pair_parallelism(two) == max(1, cores // 2)
    native = plan_sweep(variants=("spade",), seeds=(0,), preset="smoke", out=tmp_path, device="cpu",
                        overrides=TINY + ["train.numerics=native", "train.threads=0"])
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert pair_parallelism(native) == 1             # threads=0 takes every core: one pair at a time


def test_the_evaluator_trained_in_a_worker_reports_its_steps(tmp_path):
    """The sweep's bar shows the evaluator's progress: train_segmenter calls on_step after every
    step, and the worker's writer leaves "STEP TOTAL" in OUT/.evaluator-progress every 25 steps
    and at the last, which the parent reads (a garbled file reads as no report yet)."""
    from eval.segmenter import train_segmenter

    sweep = plan_sweep(variants=("spade",), seeds=(0,), preset="smoke", out=tmp_path / "sweep", overrides=TINY,
                       device="cpu", segmenter_steps=60)
    sweep.out.mkdir()
    write = evaluator_progress_writer(sweep)
    assert evaluator_progress(sweep.out) is None
    write(1)
    assert evaluator_progress(sweep.out) is None
    write(25)
    write(26)
    assert evaluator_progress(sweep.out) == (25, 60)
    write(60)
    assert evaluator_progress(sweep.out) == (60, 60)
    (sweep.out / EVALUATOR_PROGRESS).write_text("3")
    assert evaluator_progress(sweep.out) is None

    steps = []
    train_segmenter(next(iter(sweep.configs.values())), tmp_path / "seg.pt", steps=3, batch_size=2, device="cpu",
                    progress=False, on_step=steps.append)
    assert steps == [1, 2, 3]


@pytest.mark.slow
@pytest.mark.skipif(available_cores() < 2, reason="needs 2 cores to run pairs side by side")
def test_pairs_side_by_side_give_the_numbers_of_pairs_one_after_another(tmp_path, monkeypatch, capsys):
    def ablate(name, max_parallel):
        monkeypatch.setenv("SPADE_BENCH_CACHE", str(tmp_path / f"cache-{name}"))
        lines = []
        result = run_ablation(variants=("spade", "concat"), seeds=(0,), preset="smoke", out=tmp_path / name,
                              report_out=tmp_path / f"report-{name}", overrides=TINY, device="cpu",
                              segmenter_steps=2, echo=lines.append, max_parallel=max_parallel)
        assert [p.status for p in result.pairs] == ["finished", "finished"]
        return {v: json.loads((tmp_path / name / f"{v}-s0" / "eval" / "metrics.json").read_text())
                for v in ("spade", "concat")}

    inline = ablate("inline", 1)
    assert "at a time in worker processes" not in "".join(capsys.readouterr())
    side_by_side = ablate("parallel", None)
    out = "".join(capsys.readouterr())
    assert "2 at a time in worker processes" in out
    # The evaluator trained in a worker beside the first pair: the same weights, the same scores.
    assert "beside the first pairs" in out and "segmentation evaluator trained" in out
    assert not (tmp_path / "parallel" / EVALUATOR_PROGRESS).exists()   # removed once the evaluator is there
    for variant in ("spade", "concat"):
        for key in ("metrics", "references", "label_dependence"):
            assert inline[variant][key] == side_by_side[variant][key], (variant, key)
        assert side_by_side[variant]["numerics"]["mode"] == "pinned"
        assert side_by_side[variant]["numerics"]["torch_threads"] == 1


def test_a_local_slot_keeps_a_pinned_configs_threads(monkeypatch):
    from spade_bench.config import resolve

    calls = []
    monkeypatch.setattr(launch.os, "sched_setaffinity", lambda pid, cpus: calls.append(tuple(cpus)), raising=False)
    previous = torch.get_num_threads()
    try:
        launch._pin_cpus((0, 1, 2, 3), resolve("spade", preset="smoke"))
        assert torch.get_num_threads() == 1 and calls == [(0, 1, 2, 3)]
        launch._pin_cpus((0, 1), resolve("spade", preset="smoke", overrides=["train.numerics=native"]))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
