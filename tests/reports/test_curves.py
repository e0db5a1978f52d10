"""The report's learning curves: means and seeds per step, the evaluator's ceiling, whether the
ranking still moves, and points scored under another protocol left out with a note."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from fake_runs import make_run
from reports.bootstrap import BootstrapSettings
from reports.build import build_report

FAST = BootstrapSettings(replicates=50, fid_replicates=10)


def _write_curve(run, values: dict[int, float], *, other_protocol_at=None):
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    protocol = {k: metrics["protocol"].get(k) for k in ("num_images", "eval_size", "segmenter_sha256")}
    points = []
    for step, miou in values.items():
        shared = dict(protocol, segmenter_sha256="c" * 64) if step == other_protocol_at else protocol
        points.append({"step": step, "record": f"curve/step_{step:07d}/metrics.json",
                       "metrics": {"miou": miou, "pixel_accuracy": miou + 10},
                       "references": {"real_val_miou": 80.0}, "protocol": shared})
    curve = {"schema": 1, "points_requested": len(values), "steps": sorted(values),
             "metrics": ["miou", "pixel_accuracy"], "points": points, "missing": {"50": "no checkpoint step_0000050.pt: pruned"}}
    (run / "eval" / "curve.json").write_text(json.dumps(curve))


@pytest.mark.parametrize("crossing", [False, True])
def test_learning_curves_in_the_report(tmp_path, real_stats, crossing):
    root = tmp_path / "runs"
    for seed in range(2):
        spade = make_run(root, "spade", seed, real_stats=real_stats)
        concat = make_run(root, "concat", seed, real_stats=real_stats)
        # spade starts slowly; with `crossing` it overtakes concat at the last point.
        _write_curve(spade, {100: 10.0 + seed, 200: 30.0 + seed, 300: (60.0 if crossing else 40.0) + seed},
                     other_protocol_at=100 if seed == 1 else None)
        _write_curve(concat, {100: 35.0 + seed, 200: 45.0 + seed, 300: 50.0 + seed})
    result = build_report([root], tmp_path / "report", settings=FAST, progress=False)
    md = result["markdown"].read_text()
    section = md[md.index("### Learning curves"):md.index("### Figures")]
    assert "| spade | 10.0 (1) | 30.5 (2) |" in section                      # seed 1's step 100 left out
    assert "| concat | 35.5 (2) | 45.5 (2) | 50.5 (2) |" in section
    assert "spade/seed1 step 100: scored under another segmenter_sha256" in section
    assert "spade/seed0 step 50: no checkpoint step_0000050.pt: pruned" in section
    assert "ceiling for mIoU, 80.0" in section
    assert ("**changed** over the last two points" in section) is crossing
    assert ("at step 300: spade > concat" in section) is crossing
    path = tmp_path / "report" / "figures" / "synthetic_curves.png"
    assert "(figures/synthetic_curves.png)" in md and path in result["figures"]
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 300
    summary = json.loads(result["summary"].read_text())["datasets"]["synthetic"]["learning_curves"]
    assert summary["metrics"]["miou"]["concat"]["300"]["mean"] == pytest.approx(50.5)
    assert len(summary["metrics"]["miou"]["spade"]["100"]["values"]) == 1


def test_without_curves_the_report_says_how_to_get_them(tmp_path, real_stats):
    root = tmp_path / "runs"
    make_run(root, "spade", 0, real_stats=real_stats)
    result = build_report([root], tmp_path / "report", settings=FAST, progress=False)
    md = result["markdown"].read_text()
    assert "eval.curve_points=N" in md and "synthetic_curves.png" not in md
