"""`spade-bench bench` on a CPU: training steps/s of the old eager path against the new CPU path,
with a profile of where a step's time goes, per variant, measured interleaved in one run.

Each mode is its own worker process, because the numerics environment is read when torch and
numpy load (spade_bench/numerics.py): one process cannot switch between pinned and native.
Every worker builds every variant's GAN step engine and its real data loader (the procedural
training set through `TrainBatches`, as training reads it), warms each up, then waits. The
parent then runs rounds: in each round, every mode (in a rotated order) trains K steps of the
variant while the other workers sleep on their pipes; "fast-pairs" sends the command to all its
workers at once and counts their steps together over the span from the first start to the
last end. Rounds interleave the modes, so a change in the machine's load hits all of them;
the spread over rounds says how noisy the figures were.

Modes (MODES; the speed-up is fast-pairs against eager, both medians over rounds):
- eager: the path before this work: one process on threads = the cores, native numerics,
  NCHW, a scene drawn per sample, Adam's per-tensor loop;
- eager-1t: the same on one thread (the thread count's effect);
- pinned-1t: eager on one thread with the pinned numerics (the pin's cost);
- fast-1t: pinned, one thread, the CPU fast path: train.channels_last_cpu (NHWC, the
  perceptual backbone's 1x1 convolutions through oneDNN), optim.foreach, data.cache_scenes;
- fast-pairs: cores // 1 fast-1t processes at once, as `ablate` runs pairs (aggregate steps/s).
"""
from __future__ import annotations

import contextlib
import json
import os
import select
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

from spade_bench.distributed import available_cores
from spade_bench.numerics import NUMERICS_ENV, PINNED_ENV, UNPINNED_ENV, pinned_environment

CORE_VARIANTS = ("spade", "spade-gamma", "concat", "pix2pixhd")
MODES = ("eager", "eager-1t", "pinned-1t", "fast-1t", "fast-pairs")
WORKER_TIMEOUT_S = 3600

_LEVERS_OFF = {"train.channels_last_cpu": False, "optim.foreach": False, "data.cache_scenes": False}
_LEVERS_ON = {"train.channels_last_cpu": True, "optim.foreach": True, "data.cache_scenes": True}

# Phases of one step as the profile groups them (engine PHASES, plus data and the rest).
PROFILE_GROUPS = {
    "data": ("data",),
    "G forward": ("G/generate",),
    "D in G step": ("G/discriminate",),
    "perceptual forward": ("perceptual",),
    "G losses (rest)": ("G/losses-rest",),
    "G backward": ("G/backward",),
    "G optimiser": ("G/optimizer", "EMA"),
    "D: G forward": ("D/generate",),
    "D forward": ("D/discriminate", "D/losses"),
    "D backward": ("D/backward",),
    "D optimiser": ("D/optimizer",),
    "other (host)": ("other",),
}


def mode_settings(mode: str, cores: int) -> tuple[dict[str, Any], str, int]:
    """(config overrides, numerics environment "pinned"|"native", processes) of a mode."""
    if mode == "eager":
        return {**_LEVERS_OFF, "train.numerics": "native", "train.threads": cores}, "native", 1
    if mode == "eager-1t":
        return {**_LEVERS_OFF, "train.numerics": "native", "train.threads": 1}, "native", 1
    if mode == "pinned-1t":
        return {**_LEVERS_OFF, "train.numerics": "pinned", "train.threads": 1}, "pinned", 1
    if mode in ("fast-1t", "fast-pairs"):
        return ({**_LEVERS_ON, "train.numerics": "pinned", "train.threads": 1}, "pinned",
                max(1, cores) if mode == "fast-pairs" else 1)
    raise ValueError(f"unknown CPU training mode {mode!r}; choose from {', '.join(MODES)}")


def native_environment(base: Optional[dict[str, str]] = None) -> dict[str, str]:
    """The outer environment without the pin's variables: what an unpinned run reads."""
    env = dict(os.environ if base is None else base)
    for name in (*PINNED_ENV, *UNPINNED_ENV, "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY"):
        env.pop(name, None)
    return env


# ----------------------------------------------------------------------------- parent

class _Worker:
    """One worker process: JSON lines in, JSON lines out."""

    def __init__(self, spec: dict[str, Any], env: dict[str, str]):
        root = str(Path(__file__).resolve().parents[1])
        env = dict(env, PYTHONPATH=os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p))
        self.process = subprocess.Popen([sys.executable, "-m", "runners.bench_training", "--worker"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
                                        cwd=root)
        self.send(spec)

    def send(self, message: dict[str, Any]) -> None:
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def receive(self) -> dict[str, Any]:
        ready, _, _ = select.select([self.process.stdout], [], [], WORKER_TIMEOUT_S)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            code = self.process.poll()
            raise RuntimeError(f"bench worker (pid {self.process.pid}) ended without an answer (exit code {code}); "
                               f"its traceback is above")
        message = json.loads(line)
        if "error" in message:
            raise RuntimeError(f"bench worker: {message['error']}")
        return message

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.send({"quit": True})
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def run_training_comparison(config: str, variants: tuple[str, ...], *, steps: int, warmup: int, rounds: int,
                            overrides: Optional[list[str]] = None, batch: Optional[int] = None,
                            modes: tuple[str, ...] = MODES,
                            on_round: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Train `steps` steps per mode, variant and round, interleaved; the record for bench's JSON."""
    cores = available_cores()
    outer = native_environment()
    workers: dict[str, list[_Worker]] = {}
    record: dict[str, Any] = {"cores": cores, "steps": steps, "warmup": warmup, "rounds": rounds,
                              "variants": list(variants), "modes": {}, "results": {}}
    try:
        for mode in modes:
            if mode == "fast-1t" and "fast-pairs" in modes:
                continue  # measured by the first fast-pairs worker on its own
            settings, numerics, processes = mode_settings(mode, cores)
            env = pinned_environment(1, outer) if numerics == "pinned" else dict(outer)
            spec = {"config": config, "variants": list(variants), "warmup": warmup, "batch": batch,
                    "overrides": list(overrides or []) + [f"{k}={json.dumps(v) if isinstance(v, bool) else v}"
                                                          for k, v in settings.items()]}
            workers[mode] = [_Worker(spec, env) for _ in range(processes)]
        for mode, group in workers.items():
            states = [w.receive() for w in group]
            record["modes"][mode] = {"overrides": dict(mode_settings(mode, cores)[0]), "processes": len(group),
                                     "numerics": states[0]["numerics"], "ops_per_step": states[0]["ops_per_step"]}
        if "fast-pairs" in workers and "fast-1t" in modes:
            record["modes"]["fast-1t"] = {**record["modes"]["fast-pairs"], "processes": 1}
        order = [m for m in modes if m in workers or (m == "fast-1t" and "fast-pairs" in workers)]
        results: dict[str, dict[str, list[dict[str, Any]]]] = {v: {m: [] for m in order} for v in variants}
        for r in range(rounds):
            for variant in variants:
                shift = (r + list(variants).index(variant)) % len(order)
                for mode in order[shift:] + order[:shift]:
                    group = workers["fast-pairs"][:1] if mode == "fast-1t" else workers[mode]
                    for worker in group:
                        worker.send({"variant": variant, "steps": steps})
                    answers = [w.receive() for w in group]
                    results[variant][mode].append(_combine(answers))
            if on_round is not None:
                on_round(f"round {r + 1}/{rounds} done")
        record["results"] = {v: {m: _summarise(rs) for m, rs in by_mode.items()} for v, by_mode in results.items()}
        record["speedup"] = {}
        for variant in variants:
            res = record["results"][variant]
            if "eager" in res and "fast-pairs" in res:
                rounds_ratio = [f / e for f, e in zip(res["fast-pairs"]["steps_per_s_rounds"],
                                                      res["eager"]["steps_per_s_rounds"])]
                record["speedup"][variant] = {
                    "fast_pairs_over_eager": res["fast-pairs"]["steps_per_s"] / res["eager"]["steps_per_s"],
                    "per_round": rounds_ratio}
        return record
    finally:
        for group in workers.values():
            for worker in group:
                worker.close()


def _combine(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """One round of one mode: steps/s over the span of all its processes; the profile of the first."""
    span = max(a["end"] for a in answers) - min(a["start"] for a in answers)
    steps = sum(a["steps"] for a in answers)
    first = answers[0]
    return {"steps_per_s": steps / span, "wall_ms_per_step": first["wall_s"] / first["steps"] * 1e3,
            "cpu_ms_per_step": first["cpu_s"] / first["steps"] * 1e3,
            "phases_ms": {k: v / first["steps"] * 1e3 for k, v in first["phases_s"].items()}}


def _summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [r["steps_per_s"] for r in rounds]
    median_round = sorted(rounds, key=lambda r: r["steps_per_s"])[len(rounds) // 2]
    profile = {group: sum(median_round["phases_ms"].get(p, 0.0) for p in phases)
               for group, phases in PROFILE_GROUPS.items()}
    return {"steps_per_s": statistics.median(rates), "steps_per_s_rounds": rates,
            "spread": (max(rates) - min(rates)) / statistics.median(rates) if rates else None,
            "wall_ms_per_step": median_round["wall_ms_per_step"], "cpu_ms_per_step": median_round["cpu_ms_per_step"],
            "profile_ms": profile}


def format_training(record: dict[str, Any]) -> str:
    """The printed table: steps/s per variant and mode, the speed-up, and the profiles."""
    modes = [m for m in MODES if m in record["modes"]]
    lines = [f"CPU training, real data loader, {record['rounds']} interleaved rounds x {record['steps']} steps "
             f"per mode ({record['cores']} cores; fast-pairs = {record['modes'].get('fast-pairs', {}).get('processes', '-')} "
             f"single-threaded processes at once):",
             "  steps/s      " + "".join(f"{m:>12}" for m in modes) + "  fast-pairs/eager (rounds)"]
    for variant, res in record["results"].items():
        row = "".join(f"{res[m]['steps_per_s']:12.2f}" if m in res else f"{'-':>12}" for m in modes)
        sp = record.get("speedup", {}).get(variant)
        extra = (f"  {sp['fast_pairs_over_eager']:.2f}x ({', '.join(f'{x:.2f}' for x in sp['per_round'])})"
                 if sp else "")
        lines.append(f"  {variant:<12} {row}{extra}")
    spreads = [res[m]["spread"] for res in record["results"].values() for m in res if res[m]["spread"] is not None]
    if spreads:
        lines.append(f"  noise: a mode's steps/s varied by {100 * min(spreads):.0f}-{100 * max(spreads):.0f}% "
                     f"(max-min over median) across rounds")
    shown = [m for m in ("eager", "fast-1t") if m in modes]
    groups = list(PROFILE_GROUPS)
    lines.append("  where a step's time goes (ms/step, wall, median round): " + ", ".join(shown))
    lines.append("  " + f"{'':<22}" + "".join(f"{g[:11]:>12}" for g in groups) + f"{'ops/step':>10}")
    for variant, res in record["results"].items():
        for mode in shown:
            if mode not in res:
                continue
            prof = res[mode]["profile_ms"]
            ops = (record["modes"][mode].get("ops_per_step") or {}).get(variant)
            lines.append(f"  {variant + ' ' + mode:<22}" + "".join(f"{prof[g]:12.1f}" for g in groups)
                         + f"{ops if ops is not None else '-':>10}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- worker

def _worker_main() -> None:   # pragma: no cover - runs in the worker processes, tested through the bench
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from runners.bench import bench_config
    from spade_bench.config import apply_overrides
    from spade_bench.data import build_dataset
    from spade_bench.data.order import TrainBatches
    from spade_bench.distributed import DistInfo, resolve_threads
    from spade_bench.engine import GANEngine
    from spade_bench.numerics import numerics_state

    def answer(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    class CountOps(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            CountOps.count += 1
            return func(*args, **(kwargs or {}))

    try:
        spec = json.loads(sys.stdin.readline())
        sessions = {}
        for variant in spec["variants"]:
            cfg = bench_config(spec["config"], variant, spec["batch"])
            cfg = apply_overrides(cfg, spec["overrides"] + ["train.device=cpu"])
            torch.set_num_threads(resolve_threads(cfg.train.threads))
            engine = GANEngine(cfg)
            batches = iter(TrainBatches(build_dataset(cfg.data, "train"), cfg.train.batch_size, cfg.train.seed,
                                        DistInfo(), num_workers=0))
            sessions[variant] = _Session(engine, batches, cfg)
            for _ in range(spec["warmup"]):
                sessions[variant].step()
        ops = {}
        for variant, session in sessions.items():
            CountOps.count = 0
            with CountOps():
                session.step()
            ops[variant] = CountOps.count
        first = sessions[spec["variants"][0]]
        answer({"ready": True, "ops_per_step": ops,
                "numerics": numerics_state("cpu", mode=first.engine.numerics_mode)})
        for line in sys.stdin:
            message = json.loads(line)
            if message.get("quit"):
                return
            answer(sessions[message["variant"]].timed(int(message["steps"])))
    except Exception as e:  # noqa: BLE001 - reported to the parent as one line
        answer({"error": f"{type(e).__name__}: {e}"})
        raise


class _Session:
    """One variant's engine and data in a worker, with phase timing (engine.phase)."""

    def __init__(self, engine, batches, cfg):
        self.engine, self.batches, self.cfg = engine, batches, cfg
        self.phases: dict[str, float] = {}
        self.timing = False
        perceptual = engine.generator_losses.get("perceptual")
        if perceptual is not None:
            module = perceptual[0]
            module.register_forward_pre_hook(lambda m, a: self._mark("perceptual"))
            module.register_forward_hook(lambda m, a, o: self._stop("perceptual"))
        self._started: dict[str, float] = {}
        engine.phase = self._phase

    def _mark(self, name: str) -> None:
        self._started[name] = time.perf_counter()

    def _stop(self, name: str) -> None:
        if self.timing and name in self._started:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - self._started.pop(name)

    @contextlib.contextmanager
    def _phase(self, name: str):
        start = time.perf_counter()
        yield
        if self.timing:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - start

    def step(self) -> None:
        import torch

        engine = self.engine
        start = time.perf_counter()
        batch = next(self.batches)
        segmap, image = engine.prepare(batch)
        if self.timing:
            self.phases["data"] = self.phases.get("data", 0.0) + time.perf_counter() - start
        losses: dict[str, torch.Tensor] = {}
        losses.update(engine.generator_step(segmap, image))
        engine.update_ema()
        losses.update(engine.discriminator_step(segmap, image))
        engine.step_schedules()
        engine.track_finite(losses, 0)

    def timed(self, steps: int) -> dict[str, Any]:
        self.phases, self.timing = {}, True
        start, cpu = time.monotonic(), time.process_time()
        for _ in range(steps):
            self.step()
        end = time.monotonic()
        self.timing = False
        wall = end - start
        phases = dict(self.phases)
        phases["G/losses-rest"] = phases.get("G/losses", 0.0) - phases.get("perceptual", 0.0)
        phases["other"] = wall - sum(v for k, v in phases.items() if k not in ("G/losses-rest", "perceptual"))
        return {"start": start, "end": end, "steps": steps, "wall_s": wall, "cpu_s": time.process_time() - cpu,
                "phases_s": phases}


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        _worker_main()
