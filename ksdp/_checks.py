"""Checks shared by every layer (bottom of the import graph: imports nothing from ksdp)."""

from __future__ import annotations

import jax
import numpy as np


def is_concrete(x) -> bool:
    """Whether every leaf of ``x`` holds a value (is not a tracer): only then can it be validated."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


def is_permutation(perm) -> bool:
    """Whether the integer array ``perm`` holds a permutation of ``0..N-1`` along its last axis."""
    p = np.asarray(perm)
    return bool(
        np.issubdtype(p.dtype, np.integer)
        and np.array_equal(np.sort(p, axis=-1), np.broadcast_to(np.arange(p.shape[-1]), p.shape))
    )
