"""Variant registry: a variant is a named function that edits a base RunConfig.

Variants state only what differs from the base (timm's `@register_model`, with nanoGPT's
override-only configs). Core SPADE lives in `spade_bench.variants`; ablations live one per
file in the top-level `baselines` package.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from spade_bench.errors import VariantError

VariantFn = Callable[["RunConfig"], "RunConfig"]  # noqa: F821 - forward reference


@dataclass(frozen=True)
class Variant:
    name: str
    fn: VariantFn
    description: str

    def apply(self, base):
        return self.fn(base)


_REGISTRY: dict[str, Variant] = {}
_LOADED = False


def register_variant(name: str, description: str | None = None) -> Callable[[VariantFn], VariantFn]:
    """Decorator: register `fn(base) -> RunConfig` under `name`. A duplicate name is an error."""

    def deco(fn: VariantFn) -> VariantFn:
        if name in _REGISTRY:
            raise VariantError(
                f"variant {name!r} is registered twice "
                f"({_REGISTRY[name].fn.__module__} and {fn.__module__})")
        doc = description or (fn.__doc__ or "").strip().splitlines()[0:1]
        desc = doc if isinstance(doc, str) else (doc[0] if doc else "")
        _REGISTRY[name] = Variant(name=name, fn=fn, description=desc)
        return fn

    return deco


def _ensure_loaded() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    importlib.import_module("spade_bench.variants")
    importlib.import_module("baselines")


def get_variant(name: str) -> Variant:
    """Look up a variant; an unknown name lists the known ones."""
    _ensure_loaded()
    if name not in _REGISTRY:
        raise VariantError(f"unknown variant {name!r}; known variants: {', '.join(list_variants())}")
    return _REGISTRY[name]


def list_variants() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)
