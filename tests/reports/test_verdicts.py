"""The verdict rule keeps its promise (issue 20.5): with no true difference between two variants,
a finding gets a verdict ("agrees" or "disagrees") at most 5% of the time, at 3, 5 and 8 seeds
and a seed effect small, equal or large against the image noise; and it still finds a true
difference. A known-truth simulation of the report's own functions (tests/reports/verdict_sim.py:
reports.bootstrap's replicates and intervals, reports.paper.judge).

Why the segmentation metrics suffice here: a verdict needs the primary metric's interval to
exclude 0 (checked below on every draw), so the secondary metrics can only remove verdicts
("mixed"), never add one. scripts/verdict-sim runs the same simulation with every registered
metric on 2048-d features (FID, KID, precision, recall) and 10,000 draws per cell; its output is
committed in reports/verdict-sim/ and checked at the end of this file.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import verdict_sim as vs
from reports import paper

REPETITIONS = 400      # per cell: 9 cells, about 40 s on one core
ALPHA = 0.05
COMMITTED = Path(__file__).resolve().parents[2] / "reports" / "verdict-sim" / "verdict_sim.json"


def test_false_verdict_rate_is_at_most_five_percent_per_finding():
    """The rate is 5% by construction where the interval is exact (a large seed effect: a Welch
    t-test on per-run scores), and below it where the interval is conservative. A rate near 5%
    cannot be told from 5% with finite draws, so each cell may exceed 5% by 3 Monte Carlo
    standard errors (3.3 points at 400 draws), and all 3600 draws together by 3 of theirs
    (1.1 points); the rule before issue 20.5 drew 8.7-12.3% over four metrics."""
    cells, total_false, total = {}, 0, 0
    for name in vs.SCENARIOS:
        for seeds in vs.SEEDS:
            tally = vs.simulate(vs.scenario(name, features=False), seeds, REPETITIONS, seed=seeds,
                                metrics=vs.SEGMENTATION)
            false = tally.beats.get("agrees", 0) + tally.beats.get("disagrees", 0)
            # By construction: a verdict (or mixed) exactly when the primary's interval excludes 0,
            # and the "same" finding errs on exactly the same draws.
            assert tally.verdict_without_primary == 0
            assert false + tally.beats.get("mixed", 0) == tally.primary_excludes_zero
            assert tally.same.get("disagrees", 0) == tally.primary_excludes_zero
            cells[f"{name}/{seeds}"] = false / REPETITIONS
            total_false, total = total_false + false, total + REPETITIONS
    allowance = vs.monte_carlo_allowance(ALPHA, REPETITIONS)
    for cell, rate in cells.items():
        assert rate <= ALPHA + allowance, (cell, cells)
    assert total_false / total <= ALPHA + vs.monte_carlo_allowance(ALPHA, total), cells


def test_a_true_difference_gets_the_right_verdict():
    """Power: the variant worse by about 4.9 mIoU points (seed sd about 1.5 points, 3 seeds a
    side) gets "agrees" on "SPADE beats it" and "disagrees" on "they perform the same" most of
    the time (75-80% in scripts/verdict-sim), and the wrong direction almost never. A rule that
    never drew a verdict would pass the test above; not this one."""
    s = vs.scenario("equal", shift_logit=-0.25, features=False)
    tally = vs.simulate(s, 3, 200, seed=1, metrics=vs.SEGMENTATION)
    assert tally.beats.get("agrees", 0) / 200 >= 0.6, tally
    assert tally.same.get("disagrees", 0) / 200 >= 0.6, tally
    assert tally.beats.get("disagrees", 0) <= 2, tally


def test_committed_heavy_simulation_keeps_the_promise_and_the_report_quotes_it():
    """reports/verdict-sim/verdict_sim.json (scripts/verdict-sim): per cell at most 5% plus 3
    Monte Carlo standard errors, with every metric too; and the figures the report prints."""
    out = json.loads(COMMITTED.read_text())
    for part in ("null_segmentation", "null_all_metrics"):
        cells = out[part]
        assert set(cells) == {f"{n}/{s}" for n in vs.SCENARIOS for s in vs.SEEDS}, part
        for cell, tally in cells.items():
            n = tally["repetitions"]
            assert tally["verdict_without_primary"] == 0
            assert tally["false_verdict_rate_beats"] <= ALPHA + vs.monte_carlo_allowance(ALPHA, n), (part, cell)
    assert max(t["repetitions"] for t in out["null_segmentation"].values()) >= 10_000
    assert paper.SIMULATION_SUMMARY == vs.summary_text(out)
