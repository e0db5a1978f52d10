"""A known-truth simulation of the report's verdicts: how often `reports.paper.judge` draws a
verdict when the two variants do not differ (the false-verdict rate), and how often it draws
the right one when they do (power).

Runs come from coverage_sim's model (per-image tp/fp/fn counts and features, a seed effect
shared by all images of a run, run x image noise, image difficulty shared by every run). Each
repetition goes through the report's own code, nothing re-implemented: the per-run replicates
(`reports.bootstrap.metric_replicates`: every registered metric whose inputs the draw holds),
the intervals (`reports.bootstrap.differences`) and the verdict rule (`reports.paper.judge`)
for two findings at once: "SPADE beats concat" (a "beats" finding) and "noise and segmap input
perform about the same" (a "same" finding), both judged from the same intervals of
(variant - spade). The baseline side plays spade, the variant side concat / spade-vae.

A false verdict under no true difference is "agrees" or "disagrees" ("mixed" is counted
apart); the right verdict under a true difference that makes the variant worse is "agrees" for
the beats finding and "disagrees" for the same finding.

Scenarios: the seed effect small / equal / large against the image noise, meaning the seed
part of the variance of a difference (the spread of per-run scores that a seed's luck adds)
is about 0.1x, 1x and 10x its image part (which validation images were drawn), measured in
this model for mIoU and for FID/KID (`SCENARIOS`). Features are 2048-d, as FID-Inception's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import numpy as np

import coverage_sim
from reports.bootstrap import differences, metric_replicates, resample_weights
from reports.paper import HIGHER_IS_BETTER, judge

FEATURE_DIM = 2048
SEGMENTATION = ("miou", "pixel_accuracy")

# seed_sd / feature_seed_sd: the seed effect (logit / feature offset per run). The ratios of
# the seed part to the image part of a difference's variance they give in this model (5 seeds
# a side, 32 images; measured once): mIoU 0.10 / 1.07 / 11.2, FID 0.06 / 0.8 / 9, KID 0.14 /
# 1.5 / 11.
SCENARIOS = {
    "small": dict(seed_sd=0.02, feature_seed_sd=0.12),
    "equal": dict(seed_sd=0.06, feature_seed_sd=0.33),
    "large": dict(seed_sd=0.19, feature_seed_sd=0.9),
}
SEEDS = (3, 5, 8)


def scenario(name: str, *, shift_logit: float = 0.0, feature_shift: float = 0.0,
             features: bool = True) -> coverage_sim.Scenario:
    """One scenario, no true difference unless a shift is given (negative shift_logit and
    positive feature_shift make the variant worse on every metric)."""
    return coverage_sim.Scenario(shift_logit=shift_logit, feature_shift=feature_shift,
                                 feature_dim=FEATURE_DIM if features else 16, **SCENARIOS[name])


@dataclass
class Tally:
    """Verdict counts of one cell (scenario x seeds)."""

    repetitions: int = 0
    beats: dict[str, int] = field(default_factory=dict)          # verdict -> count
    same: dict[str, int] = field(default_factory=dict)
    primary_excludes_zero: int = 0
    old_rule: dict[str, int] = field(default_factory=dict)       # the rule before issue 20.5
    per_metric_excludes_zero: dict[str, int] = field(default_factory=dict)
    verdict_without_primary: int = 0                             # must stay 0
    primary_seed_sd: float = 0.0          # sum over draws of the baseline's per-run sample sd
    primary_difference: float = 0.0       # sum over draws of the primary's point difference

    def rate(self, counts: dict[str, int], *verdicts: str) -> float:
        return sum(counts.get(v, 0) for v in verdicts) / self.repetitions

    def to_json(self) -> dict:
        n = self.repetitions
        return {"repetitions": n,
                "beats": self.beats, "same": self.same,
                "false_verdict_rate_beats": self.rate(self.beats, "agrees", "disagrees"),
                "false_verdict_rate_same": self.rate(self.same, "disagrees"),
                "mixed_rate_beats": self.rate(self.beats, "mixed"),
                "primary_excludes_zero_rate": self.primary_excludes_zero / n,
                "old_rule": self.old_rule,
                "old_rule_verdict_rate": self.rate(self.old_rule, "agrees", "disagrees"),
                "per_metric_excludes_zero_rate": {m: c / n for m, c in self.per_metric_excludes_zero.items()},
                "verdict_without_primary": self.verdict_without_primary,
                "mean_primary_seed_sd": self.primary_seed_sd / n,
                "mean_primary_difference": self.primary_difference / n}


def old_rule(per_metric: dict[str, str]) -> str:
    """The finding rule before issue 20.5, for comparison only: agrees when any metric agrees
    and none disagrees, disagrees in the mirror case, mixed when both."""
    values = set(per_metric.values())
    if "agrees" in values and "disagrees" in values:
        return "mixed"
    return "agrees" if "agrees" in values else "disagrees" if "disagrees" in values else "inconclusive"


def _raw_reading(interval, metric: str) -> str:
    """A metric's reading at its own 95% level for "spade beats the variant" (old rule)."""
    if not interval.excludes_zero:
        return "inconclusive"
    variant_better = (interval.point > 0) == HIGHER_IS_BETTER[metric]
    return "disagrees" if variant_better else "agrees"


def real_statistics(real_features: np.ndarray) -> dict[str, np.ndarray]:
    """mu, sigma and features of the real photos, as the cached real statistics hold them."""
    centred = real_features - real_features.mean(0)
    sigma = centred.T @ centred / (len(real_features) - 1)   # np.cov, through BLAS
    return {"mu": real_features.mean(0), "sigma": sigma, "features": real_features}


def judge_draw(draw: coverage_sim.Draw, rng: np.random.Generator, *, replicates: int,
               fid_replicates: int, metrics: Optional[Sequence[str]]):
    """(intervals, verdicts by finding's worse variant) of one draw, through the report's code."""
    num_images = draw.variant[0].counts["tp"].shape[0]
    weights = resample_weights(num_images, replicates, rng)
    fid_weights = weights[:min(fid_replicates, replicates)]
    features = metrics is None or any(m not in SEGMENTATION for m in metrics)
    real = real_statistics(draw.real_features) if features else None

    def run(r):
        return metric_replicates(weights, fid_weights, counts=r.counts,
                                 features=r.features if features else None, real=real, metrics=metrics)

    baseline = [run(r) for r in draw.baseline]
    intervals = differences([run(r) for r in draw.variant], baseline)
    verdicts, _ = judge({"concat": intervals, "spade-vae": intervals}, {"spade", "concat", "spade-vae"})
    spread = float(np.std([points["miou"] for _, points in baseline], ddof=1))
    return intervals, {v.finding.worse: v for v in verdicts}, spread


def simulate(s: coverage_sim.Scenario, seeds: int, repetitions: int, *, seed: int = 0,
             replicates: int = 200, fid_replicates: int = 50,
             metrics: Optional[Sequence[str]] = None) -> Tally:
    """Tally the verdicts of `repetitions` draws with `seeds` runs a side.

    metrics: the metrics to interval and judge (None: every registered one with a replicate).
    """
    rng = np.random.default_rng(seed)
    tally = Tally()
    for _ in range(repetitions):
        intervals, verdicts, spread = judge_draw(coverage_sim.draw(s, seeds, rng), rng, replicates=replicates,
                                                 fid_replicates=fid_replicates, metrics=metrics)
        tally.primary_seed_sd += spread
        beats, same = verdicts["concat"], verdicts["spade-vae"]
        tally.repetitions += 1
        tally.beats[beats.verdict] = tally.beats.get(beats.verdict, 0) + 1
        tally.same[same.verdict] = tally.same.get(same.verdict, 0) + 1
        primary = intervals.get(beats.primary)
        primary_excludes = bool(primary is not None and primary.excludes_zero)
        tally.primary_difference += primary.point if primary is not None else math.nan
        tally.primary_excludes_zero += primary_excludes
        if not primary_excludes and (beats.verdict != "inconclusive" or same.verdict != "inconclusive"):
            tally.verdict_without_primary += 1
        raw = {m: _raw_reading(iv, m) for m, iv in intervals.items()}
        old = old_rule(raw)
        tally.old_rule[old] = tally.old_rule.get(old, 0) + 1
        for m, iv in intervals.items():
            tally.per_metric_excludes_zero[m] = tally.per_metric_excludes_zero.get(m, 0) + iv.excludes_zero
    return tally


def true_difference(s: coverage_sim.Scenario, draws: int = 2000, metric: str = "miou") -> float:
    """E[point(variant) - point(baseline)] for `metric` (coverage_sim.truth, one seed a side)."""
    return coverage_sim.truth(s, draws, metrics=(metric,))[metric]


def monte_carlo_allowance(rate: float, repetitions: int, z: float = 3.0) -> float:
    """z binomial standard errors of a rate estimated from `repetitions` draws."""
    return z * math.sqrt(rate * (1 - rate) / repetitions)


def with_shift(s: coverage_sim.Scenario, shift_logit: float, feature_shift: float) -> coverage_sim.Scenario:
    return replace(s, shift_logit=shift_logit, feature_shift=feature_shift)


def summary_text(out: dict) -> str:
    """The sentence the report and README quote from scripts/verdict-sim's output (verdict_sim.json):
    false-verdict rates (segmentation metrics; every metric on 2048-d features; the old rule) and
    the power at the larger stated difference when the seed effect equals the image noise."""
    null = out["null_segmentation"].values()
    full = out["null_all_metrics"].values()
    rates = [100 * t["false_verdict_rate_beats"] for t in null]
    full_rates = [100 * t["false_verdict_rate_beats"] for t in full]
    old = [100 * t["old_rule_verdict_rate"] for t in full]
    shift = min(out["true_differences"], key=float)
    power = {seeds: out["power_segmentation"][f"equal/{seeds}/{shift}"] for seeds in SEEDS}
    percent = " / ".join(f"{100 * t['beats'].get('agrees', 0) / t['repetitions']:.0f}%" for t in power.values())
    seed_sd = sum(t["mean_primary_seed_sd"] for t in power.values()) / len(power)
    draws = min(t["repetitions"] for t in null)
    full_draws = min(t["repetitions"] for t in full)
    return (f"in a known-truth simulation of these functions (scripts/verdict-sim, reports/verdict-sim/; "
            f"32 images, 3, 5 and 8 seeds, a seed effect 0.1x, 1x and 10x the image noise) a verdict came "
            f"out under no true difference {min(rates):.1f}-{max(rates):.1f}% of the time ({draws:,} draws "
            f"a case; with every metric on 2048-d features, {full_draws:,} draws a case, "
            f"{min(full_rates):.1f}-{max(full_rates):.1f}%, "
            f"where the rule before gave {min(old):.1f}-{max(old):.1f}%), and a true mIoU difference of "
            f"{abs(out['true_differences'][shift]):.1f} points (seed-to-seed sd of mIoU about {seed_sd:.1f}) "
            f"got the right verdict {percent} of the time at 3 / 5 / 8 seeds per variant.")
