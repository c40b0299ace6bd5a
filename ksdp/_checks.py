"""Checks shared by every layer (bottom of the import graph: imports nothing from ksdp)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """Whether every leaf of ``x`` holds a value (is not a tracer): only then can it be validated."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


def is_integer(v) -> bool:
    """Whether ``v`` is a Python or NumPy integer and not a boolean (``True`` is an ``int`` to Python, but
    never a count the caller meant)."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def is_permutation(perm) -> bool:
    """Whether the integer array ``perm`` holds a permutation of ``0..N-1`` along its last axis."""
    p = np.asarray(perm)
    return bool(
        np.issubdtype(p.dtype, np.integer)
        and np.array_equal(np.sort(p, axis=-1), np.broadcast_to(np.arange(p.shape[-1]), p.shape))
    )


def check_concrete_inputs(points: dict, delta) -> None:
    """At a concrete call site: every cloud in ``points`` (name -> array) finite, ``delta`` finite and
    positive; a ``ValueError`` naming the argument otherwise (under a transformation nothing is checked)."""
    for name, x in points.items():
        if is_concrete(x) and not bool(jnp.all(jnp.isfinite(x))):  # reduced where x lives
            raise ValueError(f"{name} contains NaN or infinite positions; pass finite particles.")
    if is_concrete(delta):
        d = np.asarray(delta)
        if not bool(np.all(np.isfinite(d))) or not bool(np.all(d > 0)):
            raise ValueError(f"delta (the regularisation length) must be finite and positive, got {delta!r}.")
