"""The paper's numbers and whether our variant ordering agrees with its findings."""
from __future__ import annotations

import math

import pytest
from scipy import stats

from reports.bootstrap import Interval
from reports.paper import FINDINGS, judge, published


def _iv(low: float, high: float) -> Interval:
    return Interval((low + high) / 2, low, high, 100, 3, 3)


def test_published_numbers_map_our_variants():
    assert published("cityscapes", "spade", "miou") == 62.3
    assert published("ade20k", "pix2pixhd", "fid") == 81.8
    assert published("coco-stuff", "spade", "pixel_accuracy") == 67.9
    assert published("facades", "spade", "miou") is None
    assert published("cityscapes", "concat", "miou") is None


def test_beats_finding_agrees_disagrees_mixed_and_inconclusive():
    present = {"spade", "concat", "pix2pixhd", "spade-k1"}
    intervals = {
        # concat - spade: lower mIoU and higher FID, both excluding 0 -> spade beats concat.
        "concat": {"miou": _iv(-5, -1), "fid": _iv(2, 9)},
        # pix2pixhd better on mIoU, worse on FID -> mixed.
        "pix2pixhd": {"miou": _iv(1, 4), "fid": _iv(3, 6)},
        # spade-k1: everything straddles 0.
        "spade-k1": {"miou": _iv(-2, 1), "kid": _iv(-0.01, 0.02)},
    }
    verdicts, untested = judge(intervals, present, {"spade": 96e6, "pix2pixhd": 182e6})
    by_variant = {v.finding.worse: v for v in verdicts}
    assert by_variant["concat"].verdict == "agrees"
    assert by_variant["concat"].per_metric == {"miou": "agrees", "fid": "agrees"}
    assert by_variant["pix2pixhd"].verdict == "mixed"
    assert by_variant["pix2pixhd"].per_metric == {"miou": "disagrees", "fid": "agrees"}
    assert "fewer, as in the paper" in by_variant["pix2pixhd"].params_note
    assert by_variant["spade-k1"].verdict == "inconclusive"
    assert [f.worse for f in untested] == ["spade-vae"]


def test_disagreeing_ordering_is_reported():
    verdicts, _ = judge({"concat": {"miou": _iv(0.5, 3), "kid": _iv(-0.05, -0.01)}},
                        {"spade", "concat"})
    assert verdicts[0].verdict == "disagrees"


def test_same_finding_is_never_agreed_from_intervals_containing_zero():
    same = next(f for f in FINDINGS if f.kind == "same")
    present = {same.better, same.worse}
    verdicts, _ = judge({same.worse: {"miou": _iv(-1, 1), "fid": _iv(-3, 2)}}, present)
    assert verdicts[0].verdict == "inconclusive" and "no difference detected" in verdicts[0].why
    # A secondary metric alone no longer draws a verdict (issue 20.5): FID's difference is
    # flagged, the primary mIoU decides, and it detected none.
    verdicts, _ = judge({same.worse: {"miou": _iv(-1, 1), "fid": _iv(1, 2)}}, present)
    assert verdicts[0].verdict == "inconclusive" and verdicts[0].per_metric["fid"] == "disagrees"
    assert "FID disagrees" in verdicts[0].flags[0] and "the primary mIoU decides" in verdicts[0].flags[0]
    verdicts, _ = judge({same.worse: {"miou": _iv(1, 2), "fid": _iv(-3, 2)}}, present)
    assert verdicts[0].verdict == "disagrees"


def test_fewer_than_three_seeds_is_inconclusive_with_why():
    # The old smoke report said "disagrees" from one seed per variant.
    one_seed = Interval(20.0, 18.0, 22.0, 100, 1, 1, method="image sampling only")
    two_seeds = Interval(20.0, 18.0, 22.0, 100, 2, 3)
    for interval, seeds in ((one_seed, "1 / 1 seeds"), (two_seeds, "2 / 3 seeds")):
        verdicts, _ = judge({"concat": {"miou": interval}}, {"spade", "concat"},
                            scale="200 training steps, 32 images")
        assert verdicts[0].verdict == "inconclusive"
        assert seeds in verdicts[0].why and "needs 3 per variant" in verdicts[0].why
        assert verdicts[0].why.endswith("200 training steps, 32 images")


def test_scores_beyond_the_evaluators_resolution_give_no_verdict():
    intervals = {"concat": {"miou": _iv(1, 4), "fid": _iv(-9, -2)}}
    blocked = {"concat": {"miou": "mIoU 47.2 above the ceiling 41.5"}}
    verdicts, _ = judge(intervals, {"spade", "concat"}, blocked=blocked)
    v = verdicts[0]
    assert v.per_metric == {"miou": "inconclusive", "fid": "disagrees"}
    assert "beyond the evaluator's resolution: concat mIoU 47.2" in v.per_metric_why["miou"]
    blocked["concat"]["fid"] = "FID 137.2 below the floor 147.0"
    verdicts, _ = judge(intervals, {"spade", "concat"}, blocked=blocked)
    assert verdicts[0].verdict == "inconclusive" and "resolution" in verdicts[0].why


def test_findings_need_both_variants():
    verdicts, untested = judge({}, {"spade"})
    assert verdicts == [] and len(untested) == len(FINDINGS)


def test_holm_adjusted_p_values_by_hand():
    from reports.paper import holm_adjusted

    # Sorted 0.01, 0.02, 0.04 of m = 3: 3 x 0.01, max(0.03, 2 x 0.02), max(0.04, 1 x 0.04).
    adjusted = holm_adjusted({"a": 0.04, "b": 0.01, "c": 0.02, "d": float("nan")})
    assert adjusted["b"] == pytest.approx(0.03) and adjusted["c"] == pytest.approx(0.04)
    assert adjusted["a"] == pytest.approx(0.04) and math.isnan(adjusted["d"])
    # Monotone: a larger p never gets a smaller adjusted p, capped at 1.
    assert holm_adjusted({"a": 0.6, "b": 0.5}) == {"a": 1.0, "b": 1.0}


def test_p_value_inverts_the_interval():
    # An interval that just excludes 0 at 95% has p just below 0.05; t and normal quantiles.
    for df in (4.0, math.inf):
        q = stats.t.ppf(0.975, df) if math.isfinite(df) else stats.norm.ppf(0.975)
        for point, expect_excludes in ((1.01 * q, True), (0.99 * q, False)):
            iv = Interval(point, point - q, point + q, 100, 3, 3, df=df)   # standard error 1
            assert iv.excludes_zero == expect_excludes
            assert (iv.p_value <= 0.05) == expect_excludes
            assert iv.p_value == pytest.approx(2 * (stats.t.sf(point, df) if math.isfinite(df)
                                                    else stats.norm.sf(point)))
    assert math.isnan(Interval(1.0, math.nan, math.nan, 1, 1, 1).p_value)


def test_primary_metric_decides_and_secondaries_never_make_a_verdict():
    present = {"spade", "concat"}
    # Every secondary excludes 0 in spade's favour, the primary mIoU does not: no verdict.
    secondary_only = {"miou": _iv(-1, 0.5), "pixel_accuracy": _iv(-4, -2), "fid": _iv(2, 9),
                      "kid": _iv(0.01, 0.02)}
    v = judge({"concat": secondary_only}, present)[0][0]
    assert v.verdict == "inconclusive" and v.primary == "miou"
    assert v.per_metric == {"miou": "inconclusive", "pixel_accuracy": "agrees", "fid": "agrees", "kid": "agrees"}
    assert "is not a verdict: the primary mIoU decides" in v.flags[0]
    assert v.why.startswith("the interval contains 0")
    # A secondary that excludes 0 on its own but not after Holm's correction over three is no
    # contradiction: p about 0.04 raw, 0.12 adjusted.
    weak_against = {"miou": _iv(-5, -1), "pixel_accuracy": _iv(-3, 1), "fid": _iv(-2.0, -0.05),
                    "kid": _iv(-0.01, 0.02)}
    v = judge({"concat": weak_against}, present)[0][0]
    assert v.verdict == "agrees" and v.per_metric["fid"] == "inconclusive"
    assert v.p_values["fid"] < 0.05 < v.adjusted_p_values["fid"]
    assert "Holm-adjusted over 3 secondary metrics" in v.per_metric_why["fid"]
    # A strong one against the primary turns the verdict into "mixed", named in the flags.
    strong_against = dict(weak_against, fid=_iv(-9, -5))
    v = judge({"concat": strong_against}, present)[0][0]
    assert v.verdict == "mixed" and "FID disagree" in v.flags[0]
    # Without the primary metric there is no verdict, whatever the others say.
    v = judge({"concat": {"fid": _iv(2, 9), "kid": _iv(0.01, 0.02)}}, present)[0][0]
    assert v.verdict == "inconclusive" and "primary metric mIoU has no interval" in v.why


def test_scale_rule_is_one_function():
    from reports.paper import scale_rule

    assert "smoke preset" in scale_rule(["smoke", "paper"])
    assert scale_rule(["cpu", "paper", None]) == ""
    intervals = {"concat": {"miou": _iv(-5, -1)}}
    v = judge(intervals, {"spade", "concat"}, no_verdict=scale_rule(["smoke"]))[0][0]
    assert v.verdict == "inconclusive" and v.per_metric == {"miou": "agrees"}
    assert v.why == "no verdict at this scale: the smoke preset checks the pipeline end to end, it does not rank variants"
    assert judge(intervals, {"spade", "concat"})[0][0].verdict == "agrees"


def test_a_finding_whose_runs_have_not_settled_draws_no_verdict():
    """Length decides nothing; what the runs show does: a degenerate variant, or a ranking that
    flipped between the last two learning-curve points, withholds the verdict (and only then)."""
    from reports.paper import training_gap

    intervals = {"concat": {"miou": _iv(-5, -1)}}
    present = {"spade", "concat"}
    assert judge(intervals, present, degenerate={"spade": (0, 3), "concat": (0, 3)})[0][0].verdict == "agrees"
    v = judge(intervals, present, degenerate={"spade": (1, 3), "concat": (0, 3)})[0][0]
    assert v.verdict == "inconclusive" and "spade is flagged degenerate in 1 of 3 seeds" in v.why
    assert v.per_metric == {"miou": "agrees"} and "alone would say 'agrees'" in v.flags[-1]
    settled = {"miou": {"spade": {500: 40.0, 1000: 60.0}, "concat": {500: 30.0, 1000: 50.0}}}
    assert judge(intervals, present, curves=settled)[0][0].verdict == "agrees"
    moving = {"miou": {"spade": {250: 10.0, 500: 20.0, 1000: 60.0}, "concat": {250: 5.0, 500: 30.0, 1000: 50.0}}}
    v = judge(intervals, present, curves=moving)[0][0]
    assert v.verdict == "inconclusive" and "changed between the learning-curve points at steps 500 and 1000" in v.why
    # Lower-is-better primaries read the sign the other way round; one point is no curve.
    finding = FINDINGS[0]
    assert training_gap(finding, {}, {"spade": {1000: 60.0}, "concat": {1000: 50.0}}) == ""
