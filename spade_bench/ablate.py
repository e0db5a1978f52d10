"""`spade-bench ablate`: train and score variants x seeds, then write the report.

Resumable at every level: a pair whose metrics.json matches its finished checkpoint is
skipped; an interrupted pair resumes from its latest checkpoint; the segmentation
evaluator is trained once per dataset and resolution and then reused. A pair that fails
is recorded as failed (RUN/train_summary.json) and shown as failed in the report; the
other pairs still run.
"""
from __future__ import annotations

import json
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from spade_bench.config import RunConfig, config_hash, resolve
from spade_bench.errors import ConfigError

CORE_VARIANTS = ("spade", "spade-gamma", "concat", "pix2pixhd")


@dataclass
class PairOutcome:
    variant: str
    seed: int
    run_dir: Path
    status: str  # "done" (already finished), "finished", "failed"
    error: Optional[str] = None


@dataclass
class AblationResult:
    out: Path
    report_dir: Optional[Path]
    pairs: list[PairOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[PairOutcome]:
        return [p for p in self.pairs if p.status == "failed"]


def pair_dir(out: Path, variant: str, seed: int) -> Path:
    return Path(out) / f"{variant}-s{seed}"


def _pair_is_done(run_dir: Path, cfg: RunConfig) -> bool:
    metrics = run_dir / "eval" / "metrics.json"
    if not metrics.is_file():
        return False
    try:
        record = json.loads(metrics.read_text())
    except json.JSONDecodeError:
        return False
    return record.get("checkpoint_step") == cfg.train.steps and \
        record.get("run", {}).get("config_hash") == config_hash(cfg)


def _trained(run_dir: Path, cfg: RunConfig) -> bool:
    from spade_bench import checkpoint as ckpt
    if not ckpt.latest_path(run_dir).is_file():
        return False
    summary = run_dir / "train_summary.json"
    if not summary.is_file():
        return False
    record = json.loads(summary.read_text())
    return record.get("status") == "finished" and record.get("step") == cfg.train.steps


def _mark_failed(run_dir: Path, error: str) -> None:
    from spade_bench.io import atomic_write_json
    path = run_dir / "train_summary.json"
    record = {}
    if path.is_file():
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError:
            record = {}
    record.update(status="failed", error=error)
    atomic_write_json(path, record)


def run_ablation(*, dataset: Optional[str] = None, root: Optional[str] = None,
                 variants: tuple[str, ...] = CORE_VARIANTS, seeds: tuple[int, ...] = (0,),
                 preset: str = "smoke", out: Optional[Path] = None, report_out: Optional[Path] = None,
                 overrides: Optional[list[str]] = None, device: str = "auto",
                 segmenter_steps: Optional[int] = None, echo=print) -> AblationResult:
    """Train, evaluate and report every (variant, seed) pair."""
    from tqdm import tqdm

    from eval.harness import evaluate_run
    from eval.segmenter import default_segmenter_path, train_segmenter
    from reports.build import build_report
    from spade_bench.trainer import train_run

    if not variants:
        raise ConfigError("no variants given; e.g. --variants spade,spade-gamma,concat,pix2pixhd")
    if not seeds:
        raise ConfigError("no seeds given; e.g. --seeds 0,1,2")
    base_overrides = list(overrides or [])
    if device != "auto":
        base_overrides.append(f"train.device={device}")
    # Resolve every config first: a typo in a variant name fails before any training.
    configs = {(v, s): resolve(v, preset=preset, dataset=dataset, root=root,
                               overrides=base_overrides + [f"train.seed={s}"])
               for v in variants for s in seeds}
    first = next(iter(configs.values()))
    name = f"ablate-{first.data.dataset}-{preset}"
    out = Path(out) if out else Path("runs") / name
    report_out = Path(report_out) if report_out else Path("reports") / name
    out.mkdir(parents=True, exist_ok=True)

    # One evaluator for all pairs (same dataset, resolution and root).
    seg_path = Path(first.eval.segmenter) if first.eval.segmenter else default_segmenter_path(first.data)
    if not seg_path.is_file():
        echo(f"training the segmentation evaluator -> {seg_path}")
        train_segmenter(first, seg_path, steps=segmenter_steps or first.eval.segmenter_steps, device=device)
    seg_override = [f"eval.segmenter={seg_path}"]

    result = AblationResult(out=out, report_dir=None)
    seen_warnings: set[str] = set()
    pairs = list(configs)
    steps_total = sum(cfg.train.steps for cfg in configs.values())
    bar = tqdm(total=steps_total + len(pairs), unit="step", dynamic_ncols=True, desc="ablate")
    try:
        for variant, seed in pairs:
            cfg = configs[(variant, seed)]
            run_dir = pair_dir(out, variant, seed)
            bar.set_description(f"ablate {variant} s{seed}")
            if _pair_is_done(run_dir, cfg):
                bar.update(cfg.train.steps + 1)
                result.pairs.append(PairOutcome(variant, seed, run_dir, "done"))
                continue
            try:
                if not _trained(run_dir, cfg):
                    done = {"step": 0}

                    def progress(event, trainer, done=done):
                        if event == "log":
                            bar.update(trainer.step - done["step"])
                            done["step"] = trainer.step

                    train_run(cfg, run_dir, resume=True, progress=False, hooks=[progress])
                    bar.update(cfg.train.steps - done["step"])
                else:
                    bar.update(cfg.train.steps)
                bar.set_description(f"ablate {variant} s{seed} (eval)")
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    evaluate_run(run_dir, metric="all", overrides=seg_override, device=device, progress=False)
                # Each distinct evaluator warning once, above the bar (all are in metrics.json).
                for w in caught:
                    text = str(w.message)
                    key = text.split(" from ")[0] if "FID from" in text else text
                    if key not in seen_warnings:
                        seen_warnings.add(key)
                        bar.write(f"warning: {text}")
                bar.update(1)
                result.pairs.append(PairOutcome(variant, seed, run_dir, "finished"))
            except Exception as e:  # noqa: BLE001 - one pair's crash must not end the ablation

                message = f"{type(e).__name__}: {e}"
                _mark_failed(run_dir, message)
                (run_dir / "failure_traceback.txt").write_text(traceback.format_exc())
                bar.write(f"{variant} seed {seed} failed: {message}")
                result.pairs.append(PairOutcome(variant, seed, run_dir, "failed", message))
    finally:
        bar.close()
    build_report([pair_dir(out, v, s) for v, s in pairs], report_out, name=name)
    result.report_dir = report_out
    return result
