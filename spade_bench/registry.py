"""Variant registry: finds every variant, then looks them up by name.

Variants are found, never listed by hand (lm-evaluation-harness's registry, timm's
"import every model file"):
- every module of the top-level `baselines` package, by a package scan; each must
  register at least one variant (a module whose name starts with "_" is a helper and is
  skipped), so a forgotten decorator fails loudly instead of the variant silently missing;
- every module named by an `importlib.metadata` entry point in the group
  `spade_bench.variants`, so another installed package adds variants without this one
  importing it:

      [project.entry-points."spade_bench.variants"]
      my_variants = "my_package.variants"

A duplicate name is an error naming both modules; an unknown name gets "did you mean"
and the list of names.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import pkgutil

from spade_bench.errors import VariantError
from spade_bench.variants import VARIANTS, Variant, register_variant  # noqa: F401 - re-exported

PACKAGE = "baselines"
ENTRY_POINT_GROUP = "spade_bench.variants"

_LOADED = False


def scan_package(package: str) -> dict[str, list[str]]:
    """Import every module of `package`; return {module: names of the variants it registered}.

    A module (not starting with "_") that registers nothing is a VariantError.
    """
    pkg = importlib.import_module(package)
    found: dict[str, list[str]] = {}
    for info in pkgutil.iter_modules(pkg.__path__, prefix=f"{package}."):
        if info.name.rpartition(".")[2].startswith("_"):
            continue
        module = importlib.import_module(info.name)
        found[info.name] = sorted(v.name for v in VARIANTS.values() if v.module == info.name)
        if not found[info.name]:
            raise VariantError(
                f"{module.__file__} registers no variant; "
                f"decorate its function with @register_variant(\"name\"), or rename the file to start "
                f"with _ if it is a helper")
    return found


def load_entry_points(group: str = ENTRY_POINT_GROUP) -> list[str]:
    """Import the module each entry point of `group` names; return the entry point names."""
    names = []
    for entry_point in importlib.metadata.entry_points(group=group):
        try:
            entry_point.load()
        except VariantError:
            raise
        except Exception as e:  # noqa: BLE001 - a broken plug-in becomes one clear message
            dist = entry_point.dist.name if entry_point.dist else "an installed package"
            raise VariantError(f"entry point {entry_point.name!r} = {entry_point.value!r} (group {group}, from "
                               f"{dist}) cannot be imported ({type(e).__name__}: {e}); fix or uninstall "
                               f"{dist}") from None
        names.append(entry_point.name)
    return names


def _ensure_loaded() -> None:
    global _LOADED
    if _LOADED:
        return
    # Marked loaded only once both succeed: after a failure, the next lookup retries (and
    # raises the same error) instead of answering from a half-filled registry.
    scan_package(PACKAGE)
    load_entry_points()
    _LOADED = True


def get_variant(name: str) -> Variant:
    """Look up a variant; an unknown name suggests the closest and lists the known ones."""
    _ensure_loaded()
    if name not in VARIANTS:
        close = difflib.get_close_matches(name, list(VARIANTS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise VariantError(f"unknown variant {name!r}; {hint}known variants: {', '.join(list_variants())}")
    return VARIANTS[name]


def list_variants() -> list[str]:
    """Every registered variant's name, sorted."""
    _ensure_loaded()
    return sorted(VARIANTS)
