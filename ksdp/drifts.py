r"""The chemotactic drift of the IPM: all pairs in tiles, or on a particle mesh, and which one runs.

$$
-\frac{\chi M}{J}\sum_{i\ne j}\nabla K_\delta(X^j - X^i) + v(X^j)
$$

`pair_sum` computes the all-pairs sum tile by tile over targets (memory ``O(J * tile)``), component
by component: on a CPU this layout fuses into one pass per tile. From ``J ~ 10^4`` a mesh is
cheaper: ``drift="pm"`` or ``"p3m"`` (`ksdp.particle_mesh`); ``"auto"``, the default of
`ksdp.simulate` and `ksdp.sweep`, chooses by ``J``, the dimension and the backend (`AUTO_MESH`).
`velocity` is the whole drift of eq. (8) at one state; `pair_sum_local` the sum inside a
``shard_map`` over particles (`ksdp.parallel`).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from ksdp import flows as _flows
from ksdp import kernels as _kernels
from ksdp import parallel as _parallel
from ksdp import particle_mesh as _pm
from ksdp._checks import check_concrete_inputs, is_concrete

# On a CPU one tile's pairs, over every parameter set of a batch, should fill about this many floats:
# the fused pass over them stays in the caches. A fixed 32 targets did that at J = 20000 and ran at half
# speed at J = 2000 with one set (benchmarks/ipm.py, "tile")
CPU_TILE_PAIRS = 2**19


def default_tile(n_sources: int | None = None, n_sets: int = 1) -> int:
    """Targets per tile of the all-pairs sums: on a CPU the power of two nearest
    ``CPU_TILE_PAIRS / (n_sources * n_sets)`` between 8 and 256 (a batch of ``n_sets`` parameter sets
    under ``vmap`` sums them all in each tile; without ``n_sources``, 32); 1024 on accelerators."""
    if jax.default_backend() != "cpu":
        return 1024
    if not n_sources:
        return 32
    return int(2 ** np.clip(round(np.log2(CPU_TILE_PAIRS / (n_sources * max(n_sets, 1)))), 3, 8))


# --------------------------------------------------------------------------------------------
# Drift
# --------------------------------------------------------------------------------------------
def pair_sum(
    targets,
    sources,
    delta,
    *,
    kernel: str = "blob",
    tile: int | None = None,
    mesh=None,
    axis: str | None = None,
    method: str = "ring",
    k=None,
):
    r"""$\sum_i \nabla K_\delta(y_j - x_i)$ for every target ``y_j``, in tiles.

    Zero separations (a target that is also a source) contribute exactly zero.

    Args:
      targets: ``[T, d]`` positions $y_j$.
      sources: ``[J, d]`` positions $x_i$.
      delta: regularisation length (traced; at a concrete call site finite and positive, as the positions
        must be finite: a `ValueError` otherwise).
      kernel: see `ksdp.kernels`.
      tile: targets per tile (static); memory is ``O(tile * J)``.
      mesh: a `jax.sharding.Mesh` to split targets and sources across (``T`` and ``J``
        multiples of its devices); ``axis`` names the mesh axis (default: its only one). ``method``:
        ``"ring"`` (sources rotate round the mesh; memory ``O(J / n)`` a device) or ``"allgather"``
        (every device gathers all sources; one collective, memory ``O(J)``). The result equals the
        unsharded sum to round-off and comes back sharded along the mesh axis.
      k: ``None``, or the screening rate of the screened kernel (traced; `ksdp.kernels`); not with ``mesh``.

    Returns:
      ``[T, d]``.
    """
    if mesh is not None:
        if k is not None:
            raise ValueError("pair_sum(..., mesh=) sums the unscreened kernel only; pass k=None or no mesh.")
        return _pair_sum_mesh(targets, sources, delta, mesh, axis=axis, kernel=kernel, tile=tile, method=method)
    targets = jnp.asarray(targets)
    sources = jnp.asarray(sources, targets.dtype)
    n_t, d = targets.shape
    if sources.ndim != 2 or sources.shape[1] != d:
        raise ValueError(f"sources must have shape [J, {d}] to match targets {targets.shape}, got {sources.shape}.")
    _kernels.check_kernel(kernel, d)
    if k is not None:
        _kernels.check_screened(kernel)
    # at a concrete call site: finite positions, and a finite positive delta where the kernel uses it
    check_concrete_inputs({"targets": targets, "sources": sources}, 1.0 if kernel == "exact" else delta)
    tile = int(min(tile or default_tile(len(sources)), max(n_t, 1)))
    n_tiles = -(-n_t // tile)
    pad = n_tiles * tile - n_t
    src = [sources[:, k] for k in range(d)]
    tgt = tuple(jnp.pad(targets[:, k], (0, pad)).reshape(n_tiles, tile) for k in range(d))

    def one_tile(_, t):
        dz = [t[k][:, None] - src[k][None, :] for k in range(d)]  # d arrays [tile, J]
        r2 = dz[0] * dz[0]
        for z in dz[1:]:
            r2 = r2 + z * z
        phi = _kernels.radial_factor(r2, delta, d, kernel, k)
        return None, jnp.stack([jnp.sum(z * phi, axis=1) for z in dz], axis=1)  # [tile, d]

    _, out = jax.lax.scan(one_tile, None, tgt)
    return out.reshape(n_tiles * tile, d)[:n_t]


def velocity(
    x,
    params,
    *,
    kernel: str = "blob",
    flow=None,
    tile: int | None = None,
    drift: str = "direct",
    grid: int | None = None,
    check: bool = True,
):
    r"""Drift of eq. (8): $-\frac{\chi M}{J}\sum_{i\ne j}\nabla K_\delta(X^j-X^i) + v(X^j)$.

    Args:
      x: ``[J, d]`` positions.
      params: `Params`.
      kernel: as in `simulate`.
      flow: as in `simulate`.
      tile: as in `simulate`.
      drift: ``"direct"`` (default), ``"pm"`` or ``"p3m"``, as in `simulate` (``"auto"`` chooses by ``J``).
      grid: as in `simulate`.
      check: at a concrete call (not under a transformation), refuse NaN or infinite positions, a
        ``params.delta`` that is not finite and positive, and, with ``drift="pm"``, a mesh whose largest
        cell exceeds `ksdp.particle_mesh.SPACING_LIMIT` times delta (as `simulate` does); ``False``
        returns the drift anyway.

    Returns:
      ``[J, d]``.
    """
    x = jnp.asarray(x)
    drift, grid = resolve_drift(drift, grid, x.shape[0], x.shape[-1], kernel)
    if check:
        check_concrete_inputs({"x": x}, params.delta)
    k = screening(params.k)
    if k is not None:
        _kernels.check_screened(kernel)
    chem, adv, spacing = velocity_parts(x, params, kernel=kernel, flow=flow, tile=tile, drift=drift, grid=grid, k=k)
    if check and drift == "pm":
        _pm.refuse_coarse(spacing, "drift='p3m' or 'direct'")
    return chem + adv


DRIFTS = ("auto", "direct", "pm", "p3m")
# "auto" takes, per backend and d, the last of these (drift, from J) rungs that J reaches, else the direct
# drift (the crossovers are those `python -m benchmarks.particle_mesh` measures; its JSON under
# benchmarks/results/ holds the numbers):
# - CPU: PM in 2D from 10^4. In 3D P3M from 5 x 10^4 (PM at J = 10^4 needs a grid too fine for 1e-3
#   there), and PM again from 3 x 10^5: P3M's near field grows like J^2 at a fixed grid, while PM's error
#   at a fixed cell falls like J^-1/2 (at h ~ delta it is the particle noise of the field on the scale
#   delta). A cloud too spread for PM's grid (the Kolmogorov state) is refused by the check
#   (`SPACING_LIMIT`), not run inaccurately.
# - GPU: PM in 2D from 10^4; in 3D the direct sum is faster than P3M at every measured J, so it stays up
#   to 3 x 10^5, where PM takes over as on the CPU. Other accelerators follow the GPU's table.
AUTO_MESH = {
    "cpu": {2: (("pm", 10_000),), 3: (("p3m", 50_000), ("pm", 300_000))},
    "gpu": {2: (("pm", 10_000),), 3: (("pm", 300_000),)},
}


def resolve_drift(
    drift: str, grid, n_particles: int, d: int, kernel: str, *, sharded: bool = False, backend: str | None = None
):
    """``(drift, grid)`` to run: ``"auto"`` resolved by ``J``, ``d`` and the backend, the grid checked.

    ``backend``: whose crossovers `AUTO_MESH` uses (default ``jax.default_backend()``). The grid is
    ``None`` for the direct drift.

    Raises ``ValueError`` for an unknown drift, a bad grid, a kernel the mesh cannot carry, or the
    particle mesh on particles sharded across devices (``sharded``).
    """
    if drift not in DRIFTS:
        raise ValueError(f"drift={drift!r} is not supported; use one of {DRIFTS}.")
    if drift == "auto":
        backend = jax.default_backend() if backend is None else backend
        table = AUTO_MESH.get(backend, AUTO_MESH["gpu"])
        reached = [name for name, from_j in table.get(d, ()) if n_particles >= from_j]
        use_mesh = kernel in _pm.KERNELS and not sharded and bool(reached)
        drift = reached[-1] if use_mesh else "direct"
    if drift == "direct":
        if grid is not None:
            _pm.check_grid(grid, d)  # a bad value is an error even where it is not used
        return "direct", None
    _pm.check_kernel(kernel)
    if sharded:
        raise ValueError(
            f"drift={drift!r} cannot split the particles across devices (mesh= on simulate); use drift='direct', "
            f"or sweep(..., mesh=) to split parameter sets."
        )
    return drift, _pm.check_grid(grid, d, p3m=drift == "p3m", n_particles=n_particles)


def screening(k):
    """``None`` where the screening rate ``k`` is concretely zero (the unscreened kernel, today's program bit
    for bit), else ``k`` itself (traced values run the screened kernel, which is the same law at ``k = 0``)."""
    if is_concrete(k) and not np.any(np.asarray(k)):
        return None
    return k


def mesh_cutoff(drift: str):
    """The near-field radius (in cells) the mesh plan of ``drift`` needs: P3M's, or None for PM."""
    return _pm.DEFAULT_CUTOFF if drift == "p3m" else None


def velocity_parts(
    x, params, *, kernel: str, flow, tile: int | None, drift: str = "direct", grid=None, mesh_plan=None, k=None
):
    """``(chemotactic drift [J, d], flow [J, d], largest cell / delta)`` of `velocity` (0 for direct), with
    ``drift`` and ``grid`` already resolved (`resolve_drift`): the IPM's step calls it inside its scan.

    ``mesh_plan``: the mesh drifts' `ksdp.particle_mesh.plan` for ``x`` (else the cloud's tight box).
    ``k``: ``None``, or ``params.k`` for the screened kernel.
    """
    x = jnp.asarray(x)
    n, d = x.shape
    v = _flows.resolve_flow(flow, d)
    if drift == "pm":
        total, h = _pm.mesh_sum(x, x, params.delta, grid, None, mesh_plan, k)
        spacing = (jnp.max(h) / params.delta).astype(x.dtype)
    elif drift == "p3m":  # its error does not depend on h / delta: nothing to refuse
        total = _pm.mesh_sum(x, x, params.delta, grid, mesh_cutoff(drift), mesh_plan, k)[0]
        spacing = jnp.zeros((), x.dtype)
    else:
        total, spacing = pair_sum(x, x, params.delta, kernel=kernel, tile=tile, k=k), jnp.zeros((), x.dtype)
    chem = -(params.chi * params.mass / n) * total
    adv = jax.vmap(v, in_axes=(0, None))(x, params.flow)
    if adv.shape != x.shape:
        raise ValueError(
            f"flow {_flows.flow_name(flow)} returned shape {adv.shape[1:]} for a point of shape ({d},); "
            f"a flow must map one position [d] to a velocity [d]."
        )
    return chem, adv.astype(x.dtype), spacing


# --------------------------------------------------------------------------------------------
# Sharded paths (shared helpers in ksdp.parallel): the drift sharded along particles
# --------------------------------------------------------------------------------------------
def pair_sum_local(targets, sources, delta, *, axis, n_dev, kernel, tile, method):
    """Inside ``shard_map`` over the mesh axis ``axis`` of ``n_dev`` devices: this device's targets against
    the sources of every device (``method``: ``"ring"`` or ``"allgather"``, as in `pair_sum`)."""
    if method == "allgather":
        everything = jax.lax.all_gather(sources, axis, tiled=True)
        return pair_sum(targets, everything, delta, kernel=kernel, tile=tile)
    ring = [(j, (j + 1) % n_dev) for j in range(n_dev)]

    def hop(_, carry):
        acc, src = carry
        nxt = jax.lax.ppermute(src, axis, ring)  # issued before the compute, so they can overlap
        return acc + pair_sum(targets, src, delta, kernel=kernel, tile=tile), nxt

    acc = jnp.zeros_like(targets)
    if n_dev > 1:  # the loop below leaves the last block's contribution out
        acc, sources = jax.lax.fori_loop(0, n_dev - 1, hop, (acc, sources))
    return acc + pair_sum(targets, sources, delta, kernel=kernel, tile=tile)


@partial(jax.jit, static_argnames=("mesh", "axis", "kernel", "tile", "method"))
def _pair_sum_sharded(targets, sources, delta, *, mesh, axis, kernel, tile, method):
    n_dev = mesh.shape[axis]
    fn = partial(pair_sum_local, axis=axis, n_dev=n_dev, kernel=kernel, tile=tile, method=method)
    return jax.shard_map(fn, mesh=mesh, in_specs=(P(axis), P(axis), P()), out_specs=P(axis))(targets, sources, delta)


def _pair_sum_mesh(
    targets,
    sources,
    delta,
    mesh,
    *,
    axis: str | None = None,
    kernel: str = "blob",
    tile: int | None = None,
    method: str = "ring",
):
    """Back end of ``pair_sum(..., mesh=)``: validates the split, then one jitted ``shard_map``."""
    axis, n_dev = _parallel.mesh_axis(mesh, axis)
    _parallel.check_method(method)
    targets = jnp.asarray(targets)
    sources = jnp.asarray(sources, targets.dtype)
    if targets.ndim != 2 or sources.ndim != 2 or sources.shape[1] != targets.shape[1]:
        raise ValueError(f"targets and sources must be [T, d] and [J, d], got {targets.shape} and {sources.shape}.")
    _parallel.check_divisible(targets.shape[0], n_dev, "the number of targets", "pad or trim the targets")
    _parallel.check_divisible(sources.shape[0], n_dev, "the number of sources", "pad or trim the sources")
    tile = int(min(tile or default_tile(sources.shape[0]), targets.shape[0] // n_dev))
    return _pair_sum_sharded(targets, sources, delta, mesh=mesh, axis=axis, kernel=kernel, tile=tile, method=method)
