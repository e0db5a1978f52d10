"""The paper's numbers and whether our variant ordering agrees with its findings."""
from __future__ import annotations

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
    verdicts, _ = judge({same.worse: {"miou": _iv(-1, 1), "fid": _iv(1, 2)}}, present)
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
