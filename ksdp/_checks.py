"""Checks shared by every layer (bottom of the import graph: imports nothing from ksdp)."""

from __future__ import annotations

import jax


def is_concrete(x) -> bool:
    """Whether every leaf of ``x`` holds a value (is not a tracer): only then can it be validated."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))
