"""Graceful stop: SIGINT, SIGTERM and SIGUSR1 end a training run after its current step.

`StopSignals` records the first signal while the loop runs; `stop_requested` tells the loop
whether to stop now (under DDP: whether any rank got one, so all ranks stop after the same
step). DataLoader workers ignore the signals (`ignore_stop_signals`), so the main process
can finish its step and shut them down.
"""
from __future__ import annotations

import signal
import threading
from typing import Any, Optional

import torch

from spade_bench.distributed import DistInfo, all_reduce_max

STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGUSR1")

# Under DDP, steps between the checks of whether any rank got a stop signal (each is an
# all-reduce and a host sync); a scheduler's warning (SLURM --signal=USR1@180) is far longer.
STOP_POLL_STEPS = 10


def ignore_stop_signals(worker_id: int = 0) -> None:
    """DataLoader worker_init_fn: a Ctrl-C or a scheduler's SIGTERM reaches the whole process
    group; workers ignore it, so the main process can finish its step and shut them down."""
    for name in STOP_SIGNALS:
        number = getattr(signal, name, None)
        if number is not None:
            signal.signal(number, signal.SIG_IGN)


class StopSignals:
    """Catch SIGINT, SIGTERM and SIGUSR1 while training, so the loop can stop cleanly.

    Used as a context manager in the main thread (signal handlers can only be installed
    there; elsewhere it does nothing). The first signal is only recorded in `received`; the
    trainer finishes its step, saves and stops. A second copy of the same signal raises
    KeyboardInterrupt at once, for a run that is stuck. The previous handlers come back on exit.
    """

    def __init__(self):
        self.received: Optional[str] = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.received == name:
            raise KeyboardInterrupt(f"second {name}")
        self.received = self.received or name

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for name in STOP_SIGNALS:
                number = getattr(signal, name, None)
                if number is not None:
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)  # None: set outside Python
        self._previous.clear()


def stop_requested(stop: StopSignals, step: int, info: DistInfo, device: torch.device) -> bool:
    """True when a stop signal arrived. Under DDP, when it arrived at any rank, checked every
    STOP_POLL_STEPS steps only: the all-reduce is a host sync, which the step loop otherwise
    avoids. Every rank checks at the same steps, so all stop after the same step."""
    flag = 1.0 if stop.received else 0.0
    if info.is_distributed:
        if step % STOP_POLL_STEPS:
            return False
        flag = all_reduce_max(flag, device)
    return flag > 0
