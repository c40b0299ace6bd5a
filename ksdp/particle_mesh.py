r"""Particle-mesh (PM) drift: the all-pairs sum of `ksdp.ipm.pair_sum` in $O(J + G^d \log G)$.

The direct sum $\sum_i \nabla K_\delta(y_j - x_i)$ costs $O(J^2)$; for the blob kernel, which is
smooth on the scale $\delta$, a mesh of spacing $h \lesssim \delta$ carries it (Hockney and Eastwood,
*Computer Simulation Using Particles*, ch. 5-8, free-space convolution):

1. **Box.** Per axis the cloud (targets and sources) spans ``[lo, hi]``; ``G - 2 * MARGIN`` cells
   of size $h_k = (hi_k - lo_k) / (G - 2\,\mathrm{MARGIN})$ cover it (floored at $\delta/16$ so a
   collapsed cloud keeps a finite grid). The grid has a fixed size $G^d$ (static) and its extent
   follows the cloud, so one compiled program serves every step; the cells may differ per axis,
   which fits a sheared cloud.
2. **Assign.** Triangular-shaped-cloud (TSC, quadratic B-spline) weights put each source on its
   $3^d$ nearest nodes: the density of counts $\rho$.
3. **Convolve.** $\rho$ is zero-padded to $(2G)^d$, so the circular convolution of the FFT is the
   free-space one, and convolved with each component of $\nabla K_\delta$ sampled at the grid
   offsets ($|m_k| < G$). The kernel's transform is divided by the square of the TSC transform per
   axis, $\mathrm{sinc}^6(f_k)$ (the "prefilter"): assignment and interpolation each smooth by that
   transform, and dividing it out removes their $O(h^2)$ smoothing.
4. **Interpolate.** The same TSC weights read the field at the targets. With the same assignment
   and interpolation and an odd kernel, a particle exerts exactly no force on itself (the self term
   of the direct sum is zero too) and the pair forces are antisymmetric on average.

Accuracy is governed by the largest cell in units of $\delta$, $s = \max_k h_k/\delta$ (the relative
L2 error of the drift grows like $s^2$; ``benchmarks/particle_mesh.py`` measures it on the paper's
states). `ksdp.simulate` records $s$ over a run (`ksdp.Trajectory.grid_spacing`) and refuses a run
whose grid was coarser than `SPACING_LIMIT`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ksdp import kernels as _kernels

MARGIN = 2  # cells between the cloud and the grid's edge: the TSC stencil reaches one node past its nearest
DEFAULT_GRID = {2: 512, 3: 128}  # nodes per axis (the measurements behind them: docs/algorithms.md)
MIN_GRID = 8
SPACING_LIMIT = 1.0  # largest cell / delta that a checked simulation accepts
_FLOOR = 1.0 / 16  # smallest cell / delta: a cloud narrower than the grid keeps cells of delta / 16
KERNELS = ("blob",)


def check_grid(grid, d: int) -> int:
    """The grid size per axis: ``grid``, or `DEFAULT_GRID` for ``d`` when None."""
    if grid is None:
        return DEFAULT_GRID[d]
    if not isinstance(grid, (int, np.integer)) or isinstance(grid, bool) or grid < MIN_GRID:
        raise ValueError(f"grid (particle-mesh nodes per axis) must be an integer >= {MIN_GRID}, got {grid!r}.")
    return int(grid)


def check_kernel(kernel: str) -> None:
    """The particle mesh needs a kernel that is smooth on the grid's scale: the blob kernel."""
    if kernel not in KERNELS:
        raise ValueError(
            f"the particle-mesh drift supports kernel in {KERNELS} (smooth on the scale delta), got {kernel!r}; "
            f"use drift='direct' for it."
        )


def box(points, delta, grid: int):
    r"""The grid that covers ``points``: ``(origin [d], h [d])``, node ``n`` at ``origin + n * h``.

    Args:
      points: ``[N, d]``.
      delta: regularisation length (cells are at least ``delta / 16``).
      grid: nodes per axis ``G`` (static).
    """
    lo = jnp.min(points, axis=0)
    hi = jnp.max(points, axis=0)
    h = jnp.maximum((hi - lo) / (grid - 2 * MARGIN), _FLOOR * delta)
    return lo - MARGIN * h, h


def _tsc(u, grid: int):
    """TSC stencil of grid coordinates ``u [N]``: first node ``[N]`` (int32) and weights ``[N, 3]``."""
    nearest = jnp.round(u)
    f = u - nearest  # in [-1/2, 1/2]
    w = jnp.stack([0.5 * (0.5 - f) ** 2, 0.75 - f * f, 0.5 * (0.5 + f) ** 2], axis=-1)
    # inside the box the first node lies in [MARGIN - 1, G - MARGIN - 1]; the clip only keeps a
    # non-finite position (caught by the caller's finiteness check) from indexing out of bounds
    first = jnp.clip(jnp.nan_to_num(nearest) - 1, 0, grid - 3).astype(jnp.int32)
    return first, w


def _stencils(points, origin, h, grid: int):
    """First nodes ``[N, d]`` and weights ``[N, 3, ..., 3]`` (outer product over the axes)."""
    n, d = points.shape
    firsts, weights = zip(*(_tsc((points[:, k] - origin[k]) / h[k], grid) for k in range(d)))
    w = weights[0]
    for k in range(1, d):
        w = w[..., None] * weights[k].reshape((n,) + (1,) * k + (3,))
    return jnp.stack(firsts, axis=1), w


_SCATTER = {
    d: lax.ScatterDimensionNumbers(
        update_window_dims=tuple(range(1, d + 1)), inserted_window_dims=(), scatter_dims_to_operand_dims=tuple(range(d))
    )
    for d in (2, 3)
}
_GATHER = {
    d: lax.GatherDimensionNumbers(
        offset_dims=tuple(range(1, d + 2)), collapsed_slice_dims=(), start_index_map=tuple(range(d + 1))
    )
    for d in (2, 3)
}


def _kernel_transforms(delta, h, grid: int, d: int, dtype):
    """FFTs of the prefiltered kernel gradient on the padded grid: ``d`` arrays of the rfft shape."""
    size = 2 * grid
    m = np.fft.fftfreq(size, 1.0 / size)
    m = np.where(np.abs(m) >= grid, 0.0, m)  # offsets of |m| >= G never occur between two nodes
    axes = jnp.meshgrid(*(jnp.asarray(m, dtype) * h[k] for k in range(d)), indexing="ij")
    r2 = sum(z * z for z in axes)
    phi = _kernels.radial_factor(r2, delta, d, "blob")
    prefilter = 1.0
    for k in range(d):
        f = np.fft.rfftfreq(size) if k == d - 1 else np.fft.fftfreq(size)
        shape = [1] * d
        shape[k] = -1
        prefilter = prefilter * (np.sinc(f) ** 6).reshape(shape)  # TSC transform squared (assign + read)
    prefilter = jnp.asarray(prefilter, dtype)
    return [jnp.fft.rfftn(z * phi) / prefilter for z in axes]


def _pair_sum(targets, sources, delta, grid: int):
    """`pair_sum` and the grid's cells ``h [d]``."""
    t, d = targets.shape
    origin, h = box(jnp.concatenate([targets, sources], axis=0), delta, grid)
    size = (2 * grid,) * d
    first, w = _stencils(sources, origin, h, grid)
    rho = lax.scatter_add(
        jnp.zeros((grid,) * d, sources.dtype),
        first,
        w,
        _SCATTER[d],
        mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS,  # _tsc clips every stencil inside the grid
    )
    rho_hat = jnp.fft.rfftn(rho, s=size)
    inside = (slice(0, grid),) * d
    field = jnp.stack(
        [jnp.fft.irfftn(rho_hat * k_hat, s=size)[inside] for k_hat in _kernel_transforms(delta, h, grid, d, rho.dtype)],
        axis=-1,
    ).astype(targets.dtype)  # [G, ..., G, d]
    first, w = _stencils(targets, origin, h, grid)
    start = jnp.concatenate([first, jnp.zeros((t, 1), jnp.int32)], axis=1)
    window = lax.gather(
        field, start, _GATHER[d], slice_sizes=(3,) * d + (d,), mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS
    )  # [T, 3, ..., 3, d]
    out = jnp.sum(window * w[..., None], axis=tuple(range(1, d + 1)))
    return out, h


def pair_sum(targets, sources, delta, *, grid: int | None = None, kernel: str = "blob"):
    r"""$\sum_i \nabla K_\delta(y_j - x_i)$ for every target ``y_j`` on a particle mesh.

    The particle-mesh counterpart of `ksdp.ipm.pair_sum`: its cost is $O(T + J + G^d \log G)$
    instead of $O(TJ)$, its error set by the largest cell ``h / delta`` (module docstring). Works
    under ``jit``, ``vmap`` and ``grad``.

    Args:
      targets: ``[T, d]`` positions $y_j$.
      sources: ``[J, d]`` positions $x_i$.
      delta: regularisation length (traced).
      grid: nodes per axis ``G`` (static; default `DEFAULT_GRID` for ``d``).
      kernel: ``"blob"`` (the only kernel smooth enough for a mesh).

    Returns:
      ``[T, d]``.

    Example:
      >>> import jax, ksdp
      >>> x = ksdp.uniform_ball(jax.random.key(0), 1000, 2)
      >>> fast = ksdp.particle_mesh.pair_sum(x, x, 0.03, grid=128)
      >>> exact = ksdp.pair_sum(x, x, 0.03)
      >>> bool(jax.numpy.linalg.norm(fast - exact) < 1e-3 * jax.numpy.linalg.norm(exact))
      True
    """
    targets = jnp.asarray(targets)
    if not jnp.issubdtype(targets.dtype, jnp.floating):
        targets = targets.astype(jnp.float32)
    sources = jnp.asarray(sources, targets.dtype)
    if targets.ndim != 2 or sources.ndim != 2 or sources.shape[1] != targets.shape[1]:
        raise ValueError(f"targets and sources must be [T, d] and [J, d], got {targets.shape} and {sources.shape}.")
    d = targets.shape[1]
    _kernels.check_kernel(kernel, d)
    check_kernel(kernel)
    if targets.shape[0] == 0 or sources.shape[0] == 0:
        return jnp.zeros_like(targets)
    return _pair_sum(targets, sources, delta, check_grid(grid, d))[0]

