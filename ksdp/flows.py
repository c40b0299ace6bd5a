r"""Divergence-free advection fields $v(x)$ (paper eqs. 19--21).

A flow is a pure JAX function ``v(x, params) -> [d]`` of one position ``x`` of shape ``[d]``
and a pytree of (traced) flow parameters; the simulator ``vmap``\ s it over particles. For the
built-in flows ``params`` is the amplitude $A$. A user flow may take any pytree, e.g. a
dict of floats, passed as ``Params.flow``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax.numpy as jnp

Flow = Callable  # v(x: [d], params) -> [d]


def no_flow(x, params):
    """``v = 0``."""
    del params
    return jnp.zeros_like(x)


def laminar2d(x, amplitude):
    r"""2D laminar shear, eq. (19): $v(x, y) = A(e^{-y^2}, 0)$."""
    return jnp.stack([amplitude * jnp.exp(-(x[1] ** 2)), jnp.zeros_like(x[0])])


def laminar3d(x, amplitude):
    r"""3D laminar flow, eq. (20): $v(x, y, z) = A(e^{-y^2-z^2}, 0, 0)$."""
    zero = jnp.zeros_like(x[0])
    return jnp.stack([amplitude * jnp.exp(-(x[1] ** 2) - x[2] ** 2), zero, zero])


def kolmogorov3d(x, amplitude):
    r"""3D Kolmogorov (ABC-type, chaotic) flow, eq. (21): $A(\sin 2\pi z, \sin 2\pi x, \sin 2\pi y)$."""
    s = jnp.sin(2 * math.pi * x)
    return amplitude * jnp.stack([s[2], s[0], s[1]])


FLOWS = {"none": no_flow, "laminar2d": laminar2d, "laminar3d": laminar3d, "kolmogorov3d": kolmogorov3d}
FLOW_DIMENSIONS = {"none": (2, 3), "laminar2d": (2,), "laminar3d": (3,), "kolmogorov3d": (3,)}


def resolve_flow(flow, d: int) -> Callable:
    """Turns a flow name or callable into a callable, checking it fits dimension ``d``."""
    if flow is None:
        return no_flow
    if isinstance(flow, str):
        if flow not in FLOWS:
            raise ValueError(f"flow={flow!r} is unknown; use one of {tuple(FLOWS)} or a function v(x, params).")
        if d not in FLOW_DIMENSIONS[flow]:
            raise ValueError(f"flow={flow!r} is defined for d in {FLOW_DIMENSIONS[flow]}, not d={d}.")
        return FLOWS[flow]
    if not callable(flow):
        raise TypeError(f"flow must be a name in {tuple(FLOWS)} or a callable v(x, params), got {type(flow).__name__}.")
    return flow


def flow_name(flow) -> str:
    """A printable name for metadata."""
    if flow is None:
        return "none"
    if isinstance(flow, str):
        return flow
    return f"{getattr(flow, '__module__', '?')}.{getattr(flow, '__qualname__', repr(flow))}"
