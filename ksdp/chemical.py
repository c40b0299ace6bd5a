r"""The chemical as a field (``eps > 0``): the parabolic--parabolic Keller--Segel system.

The full system (SPEC section 5; the paper's eq. (1)) gives the chemical its own time scale,

$$
\varepsilon\,\partial_t c = \Delta c - k^2 c + M\,\eta_\delta * \rho, \qquad
dX^j = \chi\nabla c(X^j)\,dt + v(X^j)\,dt + \sqrt{2\mu}\,dW^j,
$$

posed in all of $\mathbb{R}^d$, with the particles' density smoothed by the blob's mollifier
$\eta_\delta$ (so that $\varepsilon = 0$ is the IPM of `ksdp.ipm` exactly: $c = -M K_\delta * \rho$).

**The split.** A periodic grid cannot carry $c$ itself: in 2D with $k = 0$ it grows like
$\log r$ without bound, and the images of a periodic box would pull on the cloud. So the chemical is
split as $c = \beta\,c_e + w$, with $c_e$ the elliptic (screened) field of the current density, summed
in free space by the IPM's own drift (direct or mesh, `ksdp.drifts`), and $w$ what the chemical lags
behind it:

$$
\varepsilon\,\partial_t w = \Delta w - k^2 w - \beta\,\varepsilon\,\partial_t c_e + (1 - \beta)\,M\,\eta_\delta * \rho .
$$

``start="equilibrium"`` ($\beta = 1$, the default): $c$ starts at the elliptic field of the initial
law, so $w(0) = 0$; $w$ is driven by the change of $c_e$ only, is $O(\varepsilon)$ for small
$\varepsilon$ (so $\varepsilon \to 0$ reaches the elliptic IPM continuously) and, since mass and
centre of mass are conserved, its source decays fast away from the cloud. ``start="zero"``
($\beta = 0$): $c(0) = 0$ and $w = c$, the chemical the particles have emitted so far.

**The field grid.** $w$ lives on a periodic grid of ``G^d`` nodes on the cube of half-width $L$
around the initial cloud, advanced exactly in Fourier space each step: with $a = |\xi|^2 + k^2$ and
$E = e^{-a\,dt/\varepsilon}$, $\hat w \leftarrow E\,\hat w - \beta\,\varphi\,(\hat c_e^{\,n+1} - \hat c_e^{\,n})
+ (1-\beta)(1 - E)\,\hat c_e^{\,n+1}$, $\varphi = (1-E)\,\varepsilon/(a\,dt)$ (the change of $c_e$ taken
uniform over the step), where $\hat c_e = M \hat K(\xi) \hat\rho$ and $\hat K = f(\delta\sqrt a)/a$ is
the screened blob kernel's transform (`ksdp.kernels.fourier_blob`). The density is assigned with the
particle mesh's TSC weights, $\nabla w$ read back with them and their transform divided out, as in
`ksdp.particle_mesh`. Free space: the chemical spreads with the diffusion length
$\sqrt{t/\varepsilon}$, and a periodic box feels its own images once that reaches across the gap to
them. $L = 1.5\,R_0 + 2\sqrt{2d\mu T} + $ `REACH` $\sqrt{T/\varepsilon}$ ($R_0$ the initial cloud's
half-extent, $T$ the run's end; the middle term the cloud's own spread) keeps the heat kernel across the
gap below $e^{-7}$ (``1e-3``); a run records `ksdp.Trajectory.field_reach`, the largest
$(2 R_{\rm rms}(t) + \text{REACH}\sqrt{t/\varepsilon})/L$ over its steps (and the extent of the farthest
particle's stencil), and a checked run refuses more than 1, as it refuses cells wider than
`SPACING_LIMIT` times delta.
Cost per step: one deposit, one forward and $d$ inverse FFTs of ``G^d``, one read: $O(J + G^d\log G)$.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from ksdp import drifts as _drifts
from ksdp import kernels as _kernels
from ksdp import particle_mesh as _pm
from ksdp._checks import is_concrete

STARTS = ("equilibrium", "zero")
DEFAULT_GRID = {2: 512, 3: 128}
REACH = 2.63  # diffusion lengths sqrt(t / eps) to the box's edge: exp(-(2 REACH)^2 / 4) < 1e-3 across the gap
# the field grid's largest cell / delta that a checked run accepts. The lag w is smooth (its transform falls
# like |xi|^-4 times the density's change), so cells of several delta carry it: at J = 2000, t = 0.05, cells
# of 4.1 delta moved the particles by 0.2% of the lag's own effect at eps = 0.01, cells of 2.1 and 1.5 delta by
# 0.1% at eps = 0.1 and 1, the error falling 3.5-8.5x per halving of the cell (`python -m benchmarks.chemical
# --only accuracy`)
SPACING_LIMIT = 4.0
EDGE = 1.5  # the box's half-width in units of the initial cloud's half-extent (twice a ball's rms radius 0.71)


class FieldState(NamedTuple):
    """The chemical's lag ``w`` (rfft of its nodes), the last density's transform, the box and the step."""

    w_hat: Any
    rho_hat: Any
    origin: Any  # [d] the grid's first node
    h: Any  # [d] the cells (the same on every axis)
    step: Any  # int32: steps taken (0: the state of the initial law, not yet advanced)


def check_start(start: str) -> None:
    if start not in STARTS:
        raise ValueError(f"chemical={start!r} is not supported; use one of {STARTS}.")


def check_grid(grid, d: int) -> int:
    """The field grid's nodes per axis: ``grid``, or `DEFAULT_GRID` for ``d``."""
    if grid is None:
        return DEFAULT_GRID[d]
    if not isinstance(grid, (int, np.integer)) or isinstance(grid, bool) or grid < _pm.MIN_GRID:
        raise ValueError(
            f"field_grid (nodes per axis of the chemical's grid) must be an integer >= {_pm.MIN_GRID}, got {grid!r}."
        )
    return int(grid)


def half_width(extent, eps, mu, t_end: float, d: int):
    """The box's half-width ``L = EDGE * extent + 2 sqrt(2 d mu t_end) + REACH * sqrt(t_end / eps)``: room for
    the cloud to spread by diffusion (twice its rms growth) and for the chemical's reach past it."""
    return EDGE * extent + 2 * jnp.sqrt(2 * d * mu * t_end) + _reach(eps, t_end)


def _reach(eps, t):
    """``REACH * sqrt(t / eps)``, the chemical's reach past the cloud (0 at ``eps = 0``)."""
    return jnp.where(eps > 0, REACH * jnp.sqrt(t / jnp.where(eps > 0, eps, 1.0)), 0.0)


def _extent(x, centre):
    return jnp.max(jnp.abs(x - centre))


def init(x, params, grid: int, t_end: float, start: str) -> FieldState:
    """The field's state for the initial cloud ``x`` (its box centred on the cloud's box)."""
    n, d = x.shape
    lo, hi = jnp.min(x, axis=0), jnp.max(x, axis=0)
    centre = 0.5 * (lo + hi)
    big = half_width(jnp.maximum(_extent(x, centre), params.delta), params.eps, params.mu, t_end, d)
    h = jnp.full((d,), 2 * big / grid, x.dtype)
    origin = (centre - big).astype(x.dtype)
    rho_hat = _density_hat(x, origin, h, grid)[0]
    return FieldState(jnp.zeros_like(rho_hat), rho_hat, origin, h, jnp.int32(0))


def _density_hat(x, origin, h, grid: int):
    """The transform of the particles' TSC density (a probability density on the nodes), and the stencils."""
    counts, first, w = _pm.deposit(x, origin, h, grid)
    return jnp.fft.rfftn(counts / (x.shape[0] * h[0] ** x.shape[1])), first, w


def _wavenumbers(h, grid: int, d: int, dtype):
    """The rfft grid's ``xi_k`` per axis (broadcastable) and the TSC prefilter (assign and read)."""
    xis, prefilter = [], 1.0
    for k in range(d):
        f = np.fft.rfftfreq(grid) if k == d - 1 else np.fft.fftfreq(grid)
        shape = [1] * d
        shape[k] = -1
        xis.append(jnp.asarray(2 * np.pi * f, dtype).reshape(shape) / h)
        prefilter = prefilter * (np.sinc(f) ** 6).reshape(shape)
    return xis, jnp.asarray(prefilter, dtype)


def step(x, state: FieldState, params, *, grid: int, dt: float, start: str):
    r"""Advances the field to the cloud ``x`` (but not on the first call, which keeps ``w(0)``) and
    returns ``(chi * grad w at x [J, d], new state, reach ratio)``: the ratio is
    $(R + \text{REACH}\sqrt{t/\varepsilon})/L$ at this step, above 1 where the box no longer holds the
    chemical's reach or the cloud left it."""
    n, d = x.shape
    dtype = x.dtype
    cell = state.h[0]
    xis, prefilter = _wavenumbers(cell, grid, d, dtype)
    a = sum(xi * xi for xi in xis) + params.k * params.k
    kernel = params.mass * _kernels.fourier_blob(a, params.delta)
    rho_hat, first, w = _density_hat(x, state.origin, state.h, grid)
    eps = params.eps
    z = jnp.where(a > 0, a * dt / jnp.where(eps > 0, eps, 1.0), 0.0)
    z = jnp.where((eps > 0) | (a == 0), z, jnp.inf)  # eps = 0: the chemical is at equilibrium at once
    decay = jnp.exp(-z)
    if start == "equilibrium":
        phi = jnp.where(z > 0, -jnp.expm1(-z) / jnp.where(z > 0, z, 1.0), 1.0)
        phi = jnp.where(jnp.isinf(z), 0.0, phi)
        advanced = decay * state.w_hat - phi * kernel * (rho_hat - state.rho_hat)
    else:
        advanced = decay * state.w_hat - jnp.expm1(-z) * kernel * rho_hat
    w_hat = jnp.where(state.step > 0, advanced, state.w_hat)
    size = (grid,) * d
    nyquist = [jnp.where(jnp.abs(xi) * cell >= np.pi * (1 - 1e-6), 0.0, xi) for xi in xis]  # odd derivative
    grads = [jnp.fft.irfftn(1j * xi * w_hat / prefilter, s=size).astype(dtype) for xi in nyquist]
    drift = params.chi * _pm.interpolate(grads, first, w.astype(dtype))
    t = (state.step * dt).astype(dtype)
    centre = state.origin + 0.5 * grid * cell
    big = 0.5 * grid * cell
    reach = _reach(eps, t)
    spread = 2 * jnp.sqrt(jnp.mean(jnp.sum((x - centre) ** 2, axis=-1)))  # twice the cloud's rms radius
    ratio = (spread + reach) / big
    ratio = jnp.maximum(ratio, (_extent(x, centre) + 2 * cell) / big)  # every stencil inside the grid
    return drift, FieldState(w_hat, rho_hat, state.origin, state.h, state.step + 1), ratio


def cell_ratio(x0_extent: float, eps: float, mu: float, delta: float, t_end: float, grid: int, d: int) -> float:
    """The field grid's cell in units of delta for a concrete run (`SPACING_LIMIT` bounds it)."""
    big = float(half_width(max(x0_extent, delta), eps, mu, t_end, d))
    return 2 * big / grid / delta


def resolve(params, x0, d, kernel, chemical, field_grid, t_end, sharded):
    """``(screened, field)``: whether the kernel is screened (``params.k`` not concretely 0) and the
    field's static ``(grid, start)`` (``None`` where ``params.eps`` is concretely 0: the elliptic model)."""
    check_start(chemical)
    field_grid = check_grid(field_grid, d)
    screened = _drifts.screening(params.k) is not None
    if screened:
        _kernels.check_screened(kernel)
        if sharded:
            raise ValueError(
                "params.k > 0 cannot split the particles across devices (mesh= on simulate); use sweep(..., mesh=)."
            )
    eps_zero = is_concrete(params.eps) and not np.any(np.asarray(params.eps))
    if eps_zero:
        if chemical != "equilibrium":
            raise ValueError("chemical='zero' needs params.eps > 0: with eps = 0 the chemical is elliptic at once.")
        return screened, None
    if kernel != "blob":
        raise ValueError(f"the parabolic-parabolic model (params.eps > 0) runs with kernel='blob', got {kernel!r}.")
    if sharded:
        raise ValueError(
            "params.eps > 0 cannot split the particles across devices (mesh= on simulate); use sweep(..., mesh=) "
            "to split parameter sets."
        )
    if is_concrete((params.eps, params.delta, params.mu)) and (x0 is None or is_concrete(x0)):
        eps = np.asarray(params.eps, np.float64)
        if chemical == "zero" and np.any(eps == 0):
            raise ValueError("chemical='zero' needs params.eps > 0 in every set: at eps = 0 the chemical is elliptic.")
        extent = 1.0 if x0 is None else float(np.max(np.ptp(np.asarray(x0), axis=-2)) / 2)
        eps, delta, mu = np.broadcast_arrays(eps, *(np.asarray(p, np.float64) for p in (params.delta, params.mu)))
        cells = [
            cell_ratio(extent, e, m, dl, t_end, field_grid, d)
            for e, m, dl in zip(eps.ravel(), mu.ravel(), delta.ravel(), strict=True)
        ]
        if max(cells) > SPACING_LIMIT:
            worst = int(np.argmax(cells))
            raise ValueError(
                f"the chemical's field grid of {field_grid}^{d} nodes would have cells of {max(cells):.3g} delta at "
                f"eps = {eps.ravel()[worst]:g} (the limit is {SPACING_LIMIT:g}): its box must hold the "
                f"chemical's reach sqrt(t / eps) = {np.sqrt(t_end / eps.ravel()[worst]):.3g} past the cloud. Pass a "
                f"larger field_grid (about {int(np.ceil(field_grid * max(cells)))}), a shorter run, or a larger eps."
            )
    return screened, (field_grid, chemical)
