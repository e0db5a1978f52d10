"""Loss records: interval means without a per-step sync, and the steady-state rate."""
from __future__ import annotations

import math

import torch

from spade_bench.loss_log import LossMeter


def test_interval_means_reset_after_each_record():
    meter = LossMeter()
    assert math.isnan(meter.steady_rate())
    for g, d in ((1.0, 4.0), (2.0, 5.0), (6.0, 6.0)):
        losses = {"D/total": torch.tensor(d)}
        if g != 2.0:   # a step without a G step (d_steps_per_g > 1)
            losses["G/total"] = torch.tensor(g)
        meter.add(losses, images=4)
    record = meter.record(3, (1e-4, 4e-4), run_start=0.0)
    assert list(record) == ["step", "time", "D/total", "G/total", "lr_G", "lr_D", "images_per_s"]
    assert (record["step"], record["D/total"], record["G/total"]) == (3, 5.0, 3.5)
    assert (record["lr_G"], record["lr_D"]) == (1e-4, 4e-4) and record["images_per_s"] > 0
    meter.add({"D/total": torch.tensor(1.0)}, images=4)
    assert meter.record(4, (1e-4, 4e-4), run_start=0.0)["D/total"] == 1.0
    first, second = meter.rates
    assert meter.steady_rate() == second   # the first interval (warm-up) is left out
