"""What a variant is, and the decorator that records one; nothing here imports a variant.

A variant is a named function that edits a base RunConfig, stating only what differs
(timm's `@register_model`, with nanoGPT's override-only configs). Variant files import
`register_variant` from here (or from spade_bench.registry, which re-exports it);
spade_bench.registry finds the files, so this module and the variants never import each
other in a circle.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from spade_bench.errors import VariantError

VariantFn = Callable[["RunConfig"], "RunConfig"]  # noqa: F821 - forward reference


@dataclass(frozen=True)
class Variant:
    name: str
    fn: VariantFn
    description: str

    @property
    def module(self) -> str:
        """The module that registered it."""
        return self.fn.__module__


VARIANTS: dict[str, Variant] = {}


def register_variant(name: str, description: str | None = None) -> Callable[[VariantFn], VariantFn]:
    """Decorator: register `fn(base) -> RunConfig` under `name`. A duplicate name is an error.

    The description defaults to the first line of fn's docstring.
    """

    def deco(fn: VariantFn) -> VariantFn:
        if name in VARIANTS:
            raise VariantError(
                f"variant {name!r} is registered twice "
                f"({VARIANTS[name].module} and {fn.__module__}); rename one of them")
        doc = (fn.__doc__ or "").strip().splitlines()
        VARIANTS[name] = Variant(name=name, fn=fn, description=description or (doc[0] if doc else ""))
        return fn

    return deco
