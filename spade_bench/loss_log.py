"""Training loss records: interval means (`LossMeter`) and where they go (`LossLogger`:
RUN/logs/losses.jsonl, losses.csv and TensorBoard, rank 0 only)."""
from __future__ import annotations

import csv
import json
import math
import os
import time
from typing import Any, Optional

import numpy as np
import torch

from spade_bench.run_folder import RunFolder


class LossMeter:
    """Mean of each loss over a logging interval, and the interval's images per second.

    Losses are summed as device tensors, so a step costs no host sync; `record` syncs once.
    """

    def __init__(self):
        self.rates: list[float] = []
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.images = 0
        self.start = time.time()

    def add(self, losses: dict[str, torch.Tensor], images: int) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
            self.counts[k] = self.counts.get(k, 0) + 1
        self.images += images

    def record(self, step: int, lrs: tuple[float, float], run_start: float) -> dict[str, Any]:
        """{"step", "time" (s since `run_start`), <loss means>, "lr_G", "lr_D", "images_per_s"} of
        the interval since the last record; starts the next interval. The caller syncs the device
        first, so the rate counts finished work."""
        rate = self.images / max(time.time() - self.start, 1e-9)
        self.rates.append(rate)
        means = {k: float(v.item()) / self.counts[k] for k, v in self.sums.items()}
        record = {"step": step, "time": round(time.time() - run_start, 3), **means,
                  "lr_G": lrs[0], "lr_D": lrs[1], "images_per_s": rate}
        self._reset()
        return record

    def steady_rate(self) -> float:
        """Mean images/s without the first interval (warm-up, autotuning) when there are more; nan
        before the first record."""
        steady = self.rates[1:] if len(self.rates) > 1 else self.rates
        return float(np.mean(steady)) if steady else math.nan


class LossLogger:
    """losses.jsonl + losses.csv + TensorBoard, rank 0 only; a resumed run appends after its step."""

    def __init__(self, folder: RunFolder, *, enabled: bool, resume_step: int,
                 resume_record: Optional[dict[str, Any]] = None):
        self.enabled = enabled
        if not enabled:
            return
        folder.logs.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = folder.losses
        self.csv_path = folder.losses_csv
        if resume_step and self.jsonl_path.is_file():
            # Drop records past the checkpoint we resumed from: they will be recomputed.
            kept = [ln for ln in self.jsonl_path.read_text().splitlines()
                    if ln.strip() and json.loads(ln)["step"] <= resume_step]
            if resume_record and not any(json.loads(ln)["step"] == resume_record["step"] for ln in kept):
                kept.append(json.dumps(resume_record))  # logged after the checkpoint, then the run died
            self.jsonl_path.write_text("".join(ln + "\n" for ln in kept))
        elif self.jsonl_path.exists():
            self.jsonl_path.unlink()
        self.jsonl = open(self.jsonl_path, "a")
        from torch.utils.tensorboard import SummaryWriter  # function-local: slow import, rank 0 only
        self.tb = SummaryWriter(str(folder.tensorboard), purge_step=resume_step or None)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        for key, value in record.items():
            if key not in ("step", "time"):
                self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if not self.enabled:
            return
        self.jsonl.close()
        self.tb.close()
        rows = [json.loads(ln) for ln in self.jsonl_path.read_text().splitlines() if ln.strip()]
        keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("step", "time"), k))
        tmp = self.csv_path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.csv_path)
