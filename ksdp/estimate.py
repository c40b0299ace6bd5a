"""A statistic with its standard error, and the cloud every metric takes: shared by `ksdp.metrics`
and `ksdp.classifier`."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Estimate(NamedTuple):
    """A statistic and its standard error."""

    value: float
    se: float


def as_cloud(x, name: str, d: int | None = None) -> np.ndarray:
    """``x`` as a finite floating-point cloud ``[n, d]`` (of dimension ``d`` if given); a `ValueError` or
    `TypeError` naming ``name`` otherwise."""
    a = np.asarray(x)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{name} must be a cloud of shape [n, d], got shape {a.shape}.")
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"{name} must hold floating-point positions, got dtype {a.dtype}.")
    if d is not None and a.shape[1] != d:
        raise ValueError(f"{name} has dimension {a.shape[1]}, the other cloud {d}; compare clouds of one dimension.")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains non-finite positions (NaN or inf).")
    return a
