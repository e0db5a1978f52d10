"""Two runs that differ only in numeric precision (fp32 vs bf16), same seed: loss curves
overlaid, and per loss whether the gap stays within noise.

Noise is the larger of the fp32 run's own step-to-step spread and, when a reference run
is given (fp32 again, another seed), the seed-to-seed gap: GAN training is chaotic, so any
perturbation, a seed or a rounding mode, moves the adversarial balance by about that much.

    spade-bench precision RUN_FP32 RUN_BF16 --reference RUN_FP32_SEED1 --out reports/precision-smoke

`build(run_a, run_b, out, labels, reference)` is the library entry point; cli.py's
`precision` command calls it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from reports.collect import ReportError
from spade_bench.run_folder import RunFolder


def read_losses(run_dir: Path) -> dict[str, np.ndarray]:
    path = RunFolder(run_dir).losses
    if not path.is_file():
        raise ReportError(f"{run_dir} has no {path.relative_to(run_dir)}; pass a run directory that `train` wrote")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        raise ReportError(f"{path} is empty")
    keys = [k for k in rows[0] if k.startswith(("G/", "D/"))]
    out = {"step": np.array([r["step"] for r in rows], dtype=float)}
    for key in keys:
        out[key] = np.array([r.get(key, np.nan) for r in rows], dtype=float)
    return out


def compare(a: dict[str, np.ndarray], b: dict[str, np.ndarray], tail: float = 0.25,
            reference: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Per loss: means over the last `tail` of training, and the noise there.

    noise = max(std of run a's values, |mean_reference - mean_a|); a gap is 'within noise'
    when |mean_b - mean_a| <= noise.
    """
    for other in [b] + ([reference] if reference is not None else []):
        if not np.array_equal(a["step"], other["step"]):
            raise ReportError("the runs logged different steps; train them with the same train.steps and log_every")
    start = int(len(a["step"]) * (1 - tail))
    result = {}
    for key in a:
        if key == "step" or key not in b:
            continue
        ta, tb = a[key][start:], b[key][start:]
        std = float(np.nanstd(ta))
        seed_gap = (abs(float(np.nanmean(reference[key][start:]) - np.nanmean(ta)))
                    if reference is not None and key in reference else None)
        noise = max(std, seed_gap or 0.0)
        gap = float(np.nanmean(tb) - np.nanmean(ta))
        result[key] = {"mean_a": float(np.nanmean(ta)), "mean_b": float(np.nanmean(tb)), "gap": gap,
                       "noise_std_a": std, "seed_gap": seed_gap, "noise": noise, "within_noise": abs(gap) <= noise}
    return result


def build(run_a: Path, run_b: Path, out: Path, labels: tuple[str, str] = ("fp32", "bf16"),
          reference: Path | None = None) -> Path:
    """Write precision.md, precision.json and loss_curves.png into `out`; return the .md path.

    Raises ReportError when a run has no losses.jsonl or the runs logged different steps.
    """
    if len(labels) != 2 or not all(labels):
        raise ReportError(f"labels must be two names separated by a comma, e.g. fp32,bf16; got {labels!r}")
    a, b = read_losses(run_a), read_losses(run_b)
    ref = read_losses(reference) if reference is not None else None
    stats = compare(a, b, reference=ref)
    out.mkdir(parents=True, exist_ok=True)
    keys = list(stats)
    cols = min(3, len(keys))
    rows = (len(keys) + cols - 1) // cols
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, key in zip(axes.flat, keys):
        ax.plot(a["step"], a[key], label=labels[0], lw=1.4)
        ax.plot(b["step"], b[key], label=labels[1], lw=1.1, ls="--")
        if ref is not None:
            ax.plot(ref["step"], ref[key], label=f"{labels[0]}, other seed", lw=0.9, alpha=0.6, color="gray")
        verdict = "within noise" if stats[key]["within_noise"] else "beyond noise"
        ax.set_title(f"{key} ({verdict})", fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    axes.flat[0].legend()
    fig.tight_layout()
    png = out / "loss_curves.png"
    fig.savefig(png, dpi=110)

    lines = [f"# {labels[0]} vs {labels[1]}: same seed, same config otherwise", "",
             f"Runs: `{run_a}` ({labels[0]}) and `{run_b}` ({labels[1]})"
             + (f"; noise reference `{reference}` ({labels[0]}, another seed)." if reference else "."), "",
             f"![loss curves]({png.name})", "",
             "| loss | mean, last quarter (" + labels[0] + ") | (" + labels[1] + ") | gap | "
             + labels[0] + " step std | seed-to-seed gap | verdict |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for key, s in stats.items():
        seed_gap = f"{s['seed_gap']:.4f}" if s["seed_gap"] is not None else "-"
        lines.append(f"| {key} | {s['mean_a']:.4f} | {s['mean_b']:.4f} | {s['gap']:+.4f} | "
                     f"{s['noise_std_a']:.4f} | {seed_gap} | {'within noise' if s['within_noise'] else 'beyond noise'} |")
    lines += ["", "Within noise: the gap between the two runs' last-quarter means is no larger than the "
              f"larger of the {labels[0]} run's own step-to-step standard deviation over that quarter and "
              f"the gap to a {labels[0]} run with another seed (GAN training is chaotic: any perturbation "
              "moves the adversarial balance about this much)."]
    (out / "precision.md").write_text("\n".join(lines) + "\n")
    (out / "precision.json").write_text(json.dumps(stats, indent=2) + "\n")
    return out / "precision.md"
