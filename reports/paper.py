"""The paper's published numbers and ablation findings, and whether our runs agree with them.

Numbers: Table 1 of arXiv 1903.07291v2 (../shared/REFERENCE.md section 6), mIoU / pixel
accuracy in percent and FID. Findings: the paper's Table 3 ablations. A finding is checked
only when both of its variants were run, from the intervals of the differences to spade
(reports.bootstrap), per quality metric (every registered metric, in its declared direction).
A metric gives evidence only when

- both variants have at least MIN_SEEDS_FOR_VERDICT evaluated seeds (below that the
  interval covers image sampling only, or a seed spread measured from two values), and
- neither variant's score on it is beyond the evaluator's resolution (above the
  segmenter's score on real photos, or below the real train-vs-val FID floor);

otherwise the metric is "inconclusive", with the reason. With evidence:

- "X beats Y": a metric agrees when its interval excludes 0 in X's favour, disagrees when
  it excludes 0 in Y's favour, and is inconclusive otherwise. The finding agrees when at
  least one metric agrees and none disagrees; disagrees in the mirror case; is "mixed"
  when metrics point both ways; and is inconclusive when no interval excludes 0.
- "X and Y perform about the same": disagrees when any interval excludes 0; otherwise
  inconclusive (an interval containing 0 shows no difference was detected, which is not
  evidence that there is none).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

from reports.bootstrap import BASELINE, MIN_SEEDS_FOR_VERDICT, Interval
from spade_bench.metrics import list_metrics

# Table 1: (mIoU %, pixel accuracy %, FID); None where the paper prints "-".
PUBLISHED: dict[str, dict[str, tuple[Optional[float], Optional[float], Optional[float]]]] = {
    "coco-stuff": {"CRN": (23.7, 40.4, 70.4), "pix2pixHD": (14.6, 45.8, 111.5),
                   "SPADE": (37.4, 67.9, 22.6)},
    "ade20k": {"CRN": (22.4, 68.8, 73.3), "pix2pixHD": (20.3, 69.2, 81.8),
               "SPADE": (38.5, 79.9, 33.9)},
    "ade20k-outdoor": {"CRN": (16.5, 68.6, 99.0), "SIMS": (13.1, 74.7, 67.7),
                       "pix2pixHD": (17.4, 71.6, 97.8), "SPADE": (30.8, 82.9, 63.3)},
    "cityscapes": {"CRN": (52.4, 77.1, 104.7), "SIMS": (47.2, 75.5, 49.7),
                   "pix2pixHD": (58.3, 81.4, 95.0), "SPADE": (62.3, 81.9, 71.8)},
}
PUBLISHED_METRICS = ("miou", "pixel_accuracy", "fid")
# Our variant -> the paper's method name in Table 1.
VARIANT_TO_METHOD = {"spade": "SPADE", "pix2pixhd": "pix2pixHD"}
PAPER_SEGMENTERS = {"coco-stuff": "DeepLabV2", "ade20k": "UperNet101", "cityscapes": "DRN-D-105"}

# Direction of "better" for the quality metrics a finding is judged on: every registered metric.
HIGHER_IS_BETTER = {m.name: m.higher_is_better() for m in list_metrics()}


def published(dataset: str, variant: str, metric: str) -> Optional[float]:
    """The paper's Table 1 value for our variant on `dataset`, or None where it has none."""
    method = VARIANT_TO_METHOD.get(variant)
    row = PUBLISHED.get(dataset, {}).get(method or "")
    if row is None or metric not in PUBLISHED_METRICS:
        return None
    return row[PUBLISHED_METRICS.index(metric)]


@dataclass(frozen=True)
class Finding:
    """One claim of the paper about two variants.

    Args:
        text: the claim in words.
        better, worse: our variant names (for kind "same", the two compared variants).
        kind: "beats" or "same".
        source: where the paper makes it.
        caveat: how our variant differs from the paper's, if it does.
    """

    text: str
    better: str
    worse: str
    kind: str = "beats"
    source: str = "Table 3"
    caveat: str = ""


FINDINGS = (
    Finding("SPADE beats concatenating the segmap at every layer", "spade", "concat"),
    Finding("SPADE beats pix2pixHD", "spade", "pix2pixhd", source="Tables 1 and 3",
            caveat="the paper's Table 3 uses pix2pixHD++ (pix2pixHD with SPADE's training "
                   "improvements); Table 1 uses pix2pixHD"),
    Finding("A 1x1 SPADE kernel hurts", "spade", "spade-k1"),
    Finding("Noise input and segmap input perform about the same", "spade", "spade-vae",
            kind="same",
            caveat="our spade-vae takes z from the style encoder, not pure noise"),
)


@dataclass(frozen=True)
class Verdict:
    """How our runs bear on one finding: overall, per metric (with why), and a note on parameters.

    `why` says what an inconclusive verdict lacks (seeds, resolution, training steps, images).
    """

    finding: Finding
    verdict: str                       # agrees | disagrees | mixed | inconclusive
    per_metric: dict[str, str]         # metric -> agrees | disagrees | inconclusive
    params_note: str = ""
    why: str = ""
    per_metric_why: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"finding": self.finding.text, "source": self.finding.source,
                "variants": [self.finding.better, self.finding.worse], "kind": self.finding.kind,
                "verdict": self.verdict, "per_metric": self.per_metric,
                "per_metric_why": self.per_metric_why, "why": self.why,
                "caveat": self.finding.caveat, "params_note": self.params_note}


def _metric_verdict(finding: Finding, metric: str, interval: Interval,
                    blocked: Mapping[str, Mapping[str, str]]) -> tuple[str, str]:
    """(verdict, why it is inconclusive or "")."""
    beyond = [f"{v} {blocked[v][metric]}" for v in (finding.better, finding.worse)
              if metric in blocked.get(v, {})]
    if beyond:
        return "inconclusive", "beyond the evaluator's resolution: " + "; ".join(beyond)
    if interval.min_seeds < MIN_SEEDS_FOR_VERDICT:
        return "inconclusive", (f"{interval.variant_seeds} / {interval.baseline_seeds} seeds "
                                f"(a verdict needs {MIN_SEEDS_FOR_VERDICT} per variant)")
    if finding.kind == "same":
        if interval.excludes_zero:
            return "disagrees", ""
        return "inconclusive", "no difference detected, which does not show there is none"
    if not interval.excludes_zero:
        return "inconclusive", "the interval contains 0"
    # Intervals are (other variant - spade); turn that into the sign of (better - worse).
    sign = 1 if interval.low > 0 else -1
    if finding.better == BASELINE:
        sign = -sign
    better_wins = (sign > 0) == HIGHER_IS_BETTER[metric]
    return ("agrees" if better_wins else "disagrees"), ""


def judge(intervals: Mapping[str, Mapping[str, Interval]],
          variants_present: set[str], params: Optional[Mapping[str, Optional[float]]] = None,
          *, blocked: Optional[Mapping[str, Mapping[str, str]]] = None, scale: str = "",
          ) -> tuple[list[Verdict], list[Finding]]:
    """Check each finding whose two variants are present; return (verdicts, findings not tested).

    Args:
        intervals: variant -> metric -> Interval of (variant - spade).
        variants_present: variants with at least one evaluated run.
        params: variant -> mean generator parameters (for "with fewer parameters").
        blocked: variant -> metric -> why its score is beyond the evaluator's resolution;
            no verdict is drawn from such a metric.
        scale: the training and evaluation scale in words ("200 training steps, 32 images"),
            added to the reason of an inconclusive verdict.
    """
    params = params or {}
    blocked = blocked or {}
    verdicts, untested = [], []
    for finding in FINDINGS:
        if not {finding.better, finding.worse} <= variants_present:
            untested.append(finding)
            continue
        other = finding.worse if finding.better == BASELINE else finding.better
        judged = {m: _metric_verdict(finding, m, iv, blocked)
                  for m, iv in intervals.get(other, {}).items() if m in HIGHER_IS_BETTER}
        per_metric = {m: v for m, (v, _) in judged.items()}
        per_metric_why = {m: why for m, (_, why) in judged.items() if why}
        values = set(per_metric.values())
        if not per_metric:
            verdict = "inconclusive"
        elif finding.kind == "same":
            verdict = "disagrees" if "disagrees" in values else "inconclusive"
        elif "agrees" in values and "disagrees" in values:
            verdict = "mixed"
        elif "agrees" in values:
            verdict = "agrees"
        elif "disagrees" in values:
            verdict = "disagrees"
        else:
            verdict = "inconclusive"
        why = ""
        if verdict == "inconclusive":
            reasons = list(dict.fromkeys(per_metric_why.values())) or ["no intervals"]
            why = "; ".join(reasons + ([scale] if scale else []))
        note = ""
        if finding.worse == "pix2pixhd":
            a, b = params.get(finding.better), params.get(finding.worse)
            if a and b:
                fewer = "fewer, as in the paper" if a < b else "not fewer, unlike the paper"
                note = f"generator parameters {a / 1e6:.2f}M vs {b / 1e6:.2f}M ({fewer})"
        verdicts.append(Verdict(finding, verdict, per_metric, note, why, per_metric_why))
    return verdicts, untested
