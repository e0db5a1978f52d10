"""spade-bench command line: parse, call the library, print. Nothing else lives here.

Every command turns a `SpadeBenchError` into one line on stderr and a non-zero exit;
`spade-bench --debug ...` shows the traceback instead.
"""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from spade_bench.errors import SpadeBenchError

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


def _errors(fn):
    """Run a command; a SpadeBenchError becomes one clear line and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SpadeBenchError as e:
            if _STATE["debug"]:
                raise
            typer.secho(f"error: {e}", err=True, fg=typer.colors.RED)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            typer.secho("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


# Options shared by the commands that resolve a run config.
_VARIANT = typer.Option("spade", "--variant", "-v", help="Registered variant; see `spade-bench variants`.")
_PRESET = typer.Option("default", "--preset", "-p", help="Named preset: default, smoke, facades, paper.")
_DATASET = typer.Option(None, "--dataset", "-d",
                        help="synthetic, facades, coco-stuff, cityscapes, ade20k or folder.")
_ROOT = typer.Option(None, "--root", help="Dataset folder (not needed for synthetic).")
_CONFIG = typer.Option(None, "--config", "-c", help="YAML or JSON config file, applied after the variant.")
_SET = typer.Option(None, "--set", "-s", help="Override, e.g. --set generator.ngf=32 (repeatable).")


def _resolve(variant, preset, dataset, root, config, overrides):
    from spade_bench.config import resolve
    return resolve(variant, preset=preset, dataset=dataset, root=root, config_file=config,
                   overrides=list(overrides or []))


# ----------------------------------------------------------------------------- variants, config

@app.command()
@_errors
def variants() -> None:
    """List the registered variants with their one-line descriptions.

    Example: spade-bench variants
    """
    from spade_bench.registry import get_variant, list_variants
    names = list_variants()
    width = max(map(len, names))
    for name in names:
        typer.echo(f"{name:<{width}}  {get_variant(name).description}")


@app.command("config")
@_errors
def show_config(variant: str = _VARIANT, preset: str = _PRESET, dataset: Optional[str] = _DATASET,
                root: Optional[str] = _ROOT, config: Optional[str] = _CONFIG,
                set_: Optional[List[str]] = _SET) -> None:
    """Print the fully resolved run config as JSON (what `train` would save).

    Example: spade-bench config --variant concat --preset smoke --set generator.ngf=8
    """
    from spade_bench.config import config_hash, to_json
    cfg = _resolve(variant, preset, dataset, root, config, set_)
    typer.echo(to_json(cfg))
    typer.echo(f"# config hash {config_hash(cfg)}", err=True)


# ----------------------------------------------------------------------------- data commands


# ----------------------------------------------------------------------------- train


# ----------------------------------------------------------------------------- eval, synth, segmenter


# ----------------------------------------------------------------------------- ablate, report


# ----------------------------------------------------------------------------- bench


if __name__ == "__main__":
    app()
