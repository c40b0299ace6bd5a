r"""The regularised interacting particle method (IPM), paper eq. (8).

$$
dX^j = -\frac{\chi M}{J}\sum_{i\ne j}\nabla K_\delta(X^j - X^i)\,dt + v(X^j)\,dt + \sqrt{2\mu}\,dW^j,
$$

integrated by Euler--Maruyama with a fixed step ``dt`` under `jax.lax.scan`.

Static vs traced (ott's ``PointCloud`` split): the number of particles ``J``, the dimension ``d``,
the kernel and flow, ``dt`` and the snapshot schedule fix shapes and loop lengths and are static;
the physical parameters in `Params` (``chi, mu, mass, delta, flow, eps, k``) are traced, so one
compiled program serves every value and ``jax.vmap`` over a batch of them runs in one program.

The drift itself, all pairs in tiles or on a particle mesh, and which one runs, is `ksdp.drifts`'s.
With ``eps > 0`` (the parabolic--parabolic system) the chemical is a field with its own state, advanced
each step beside the particles (`ksdp.chemical`); ``k > 0`` screens the kernel (`ksdp.kernels`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from ksdp import chemical as _chemical
from ksdp import drifts as _drifts
from ksdp import euler as _euler
from ksdp import flows as _flows
from ksdp import health as _health
from ksdp import kernels as _kernels
from ksdp import parallel as _parallel
from ksdp._checks import is_concrete as _is_concrete
from ksdp._checks import is_integer as _is_integer
from ksdp.initial import uniform_ball

DEFAULT_MASS = 16 * math.pi  # supercritical in 2D (critical mass 8 pi)
DEFAULT_DELTA = math.sqrt(1e-3)  # the paper's delta^2 = 1e-3
DEFAULT_DT = 1e-4  # the paper does not state it (SPEC section 1)


class Params(NamedTuple):
    """Physical parameters; every field is a traced float (or a pytree for a user flow).

    Attributes:
      chi: chemotactic sensitivity $\\chi$.
      mu: diffusivity $\\mu$ (``>= 0``).
      mass: total mass $M$.
      delta: regularisation length $\\delta$ (not $\\delta^2$).
      flow: parameters of the flow; the amplitude $A$ for the built-in flows.
      eps: the chemical's time scale in ``eps c_t = Lap c - k^2 c + M rho``
        (``0``, the default: the elliptic model of the paper; ``> 0``: `ksdp.chemical`).
      k: the chemical's decay rate (``0``, the default: the Newtonian kernel; ``> 0``: screened).
    """

    chi: Any = 1.0
    mu: Any = 1.0
    mass: Any = DEFAULT_MASS
    delta: Any = DEFAULT_DELTA
    flow: Any = 0.0
    eps: Any = 0.0
    k: Any = 0.0


class Trajectory(NamedTuple):
    """Snapshots of one run (or of a batch of runs, with a leading axis ``[P]``).

    Attributes:
      times: ``[S]`` snapshot times.
      particles: ``[S, J, d]`` positions at those times.
      nonfinite_step: ``int32``; ``-1`` if every position stayed finite, else the first Euler step
        (1-based; time ``step * dt``) after which some position was not finite.
      health: the run's largest step of the interaction in units of delta,
        $\\max_n \\max_j dt\\,|\text{chemotactic drift}_j| / \\delta$ (the flow and the noise left out).
        The regularised drift varies on the scale delta, so an explicit Euler step is trustworthy
        while this stays well below 1; healthy runs of the experiments stay below 0.2.
      unstable_step: ``int32``; ``-1``, or the first step at which ``health`` exceeded
        `HEALTH_LIMIT`: the run is exploding even if it is still finite.
      grid_spacing: the particle-mesh drift's largest cell over the run in units of delta,
        $\\max_n \\max_k h_k / \\delta$ (`ksdp.particle_mesh`); ``0`` for the direct drift and for P3M,
        whose error does not depend on it. PM's error grows like its square; a checked run refuses
        more than `ksdp.particle_mesh.SPACING_LIMIT`.
      field_reach: with ``eps > 0``, the largest ratio over the run of the cloud's extent plus the
        chemical's reach to the half-width of its field grid (`ksdp.chemical`); a checked run refuses
        more than 1; ``None`` for the elliptic model.
      flow_health: the flow's largest step, $\\max_n dt \\max_j |v(x^{n+1}_j) - v(x^n_j)| / |x^{n+1}_j -
        x^n_j|$: ``dt`` times the rate at which the flow changes along the particles' steps (a lower bound
        of ``dt`` times its Lipschitz constant; 0 without a flow). Explicit Euler follows a flow while this
        stays well below 1; above `HEALTH_LIMIT` the run counts as unstable (``unstable_step``).
      step_bias: ``[S]``, the Euler--Maruyama step's estimated first-order bias of the second moment about
        the origin, $\\langle|x|^2\\rangle$, from the interaction (with ``eps > 0`` the chemical's field),
        summed over the steps up to each snapshot (`ksdp.euler.accuracy`): positive when the run's second
        moment is too large by about this much. Against a step-halving of the same noise it came out a
        third too large for the aggregating ks2d runs, whose contraction damps earlier errors; the flows'
        own share is measured, not estimated (docs/model.md, "Numerical health"). A checked run warns
        (`StepSizeWarning`) where it exceeds `STEP_BIAS_LIMIT` standard errors of the snapshot's second
        moment over its ``J`` particles.
    """

    times: Any
    particles: Any
    nonfinite_step: Any
    health: Any = None
    unstable_step: Any = None
    grid_spacing: Any = None
    field_reach: Any = None
    flow_health: Any = None
    step_bias: Any = None


NonFiniteError = _health.NonFiniteError
StepSizeWarning = _health.StepSizeWarning
HEALTH_LIMIT = _health.HEALTH_LIMIT
STEP_BIAS_LIMIT = _health.STEP_BIAS_LIMIT
raise_if_nonfinite = _health.raise_if_nonfinite


# --------------------------------------------------------------------------------------------
# Validation (the time grid: `ksdp.euler.time_grid`)
# --------------------------------------------------------------------------------------------
def check_params(params: Params) -> None:
    """Raises ``ValueError`` for physically meaningless values (only where they are concrete)."""
    if not isinstance(params, Params):
        raise TypeError(f"params must be ksdp.Params, got {type(params).__name__}.")
    for name in ("chi", "mu", "mass", "delta", "eps", "k"):
        value = getattr(params, name)
        if not _is_concrete(value):
            continue
        a = np.asarray(value, dtype=np.float64)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"params.{name} must be finite, got {value!r}.")
        if name in ("mu", "eps", "k") and np.any(a < 0):
            what = {"mu": "diffusivity", "eps": "the chemical's time scale", "k": "the chemical's decay rate"}[name]
            raise ValueError(f"params.{name} ({what}) must be >= 0, got {value!r}.")
        if name == "delta" and np.any(a <= 0):
            raise ValueError(f"params.delta must be > 0 (use kernel='exact' for no regularisation), got {value!r}.")
    for leaf in jax.tree_util.tree_leaves(params.flow):
        if _is_concrete(leaf) and np.asarray(leaf).dtype.kind in "fiuc" and not np.all(np.isfinite(leaf)):
            raise ValueError(f"params.flow (the flow's parameters) must be finite, got {params.flow!r}.")


def _check_x0(x0, d: int):
    x0 = jnp.asarray(x0)
    if x0.ndim != 2 or x0.shape[1] != d or x0.shape[0] < 1:
        raise ValueError(f"x0 must have shape [J, d] with d={d} and J >= 1, got {x0.shape}.")
    if not jnp.issubdtype(x0.dtype, jnp.floating):
        raise TypeError(f"x0 must be a floating array, got dtype {x0.dtype}.")
    if _is_concrete(x0) and not bool(jnp.all(jnp.isfinite(x0))):
        raise ValueError("x0 contains non-finite particles (NaN or inf); pass finite initial positions.")
    return x0


def _check_user_flow(flow, params, d: int, batched: bool) -> None:
    """A user flow maps one position ``[d]`` (and ``params.flow``) to one velocity ``[d]``."""
    x = jax.ShapeDtypeStruct((d,), jnp.float32)
    flow_params = jax.tree_util.tree_map(lambda a: a[0], params.flow) if batched else params.flow  # one set
    try:
        out = jax.eval_shape(flow, x, flow_params)
    except Exception as e:
        raise TypeError(f"the flow function failed on one position of shape {x.shape}: {type(e).__name__}: {e}") from e
    shape = getattr(out, "shape", None)
    if shape != x.shape:
        raise TypeError(
            f"the flow function must map one position of shape {x.shape} to a velocity of the same shape, got "
            f"{shape if shape is not None else type(out).__name__}."
        )


def _prepare(
    params,
    times,
    n_particles,
    x0,
    d,
    kernel,
    flow,
    dt,
    tile,
    drift,
    grid,
    batched=False,
    sharded=False,
    chemical="equilibrium",
    field_grid=None,
    batch=1,
):
    if not isinstance(d, (int, np.integer)) or isinstance(d, bool):
        raise TypeError(f"d (the space dimension) must be the integer 2 or 3, got {d!r}.")
    _kernels.check_kernel(kernel, d)
    check_params(params)
    t, steps = _euler.time_grid(times, dt)
    if x0 is not None:
        n_from_x0 = x0.shape[-2]  # callers validated x0 ([J, d] or [P, J, d])
        if n_particles is not None and n_particles != n_from_x0:
            raise ValueError(f"n_particles={n_particles} disagrees with x0, which holds {n_from_x0} particles.")
        n_particles = n_from_x0
    if n_particles is None:
        raise ValueError("give n_particles (J) or initial positions x0.")
    if not _is_integer(n_particles) or n_particles < 1:
        raise ValueError(f"n_particles (J) must be a positive integer, got {n_particles!r}.")
    if tile is not None and (not _is_integer(tile) or tile < 1):
        raise ValueError(f"tile must be a positive integer, got {tile!r}.")
    drift, grid = _drifts.resolve_drift(drift, grid, int(n_particles), d, kernel, sharded=sharded)
    _flows.resolve_flow(flow, d)
    if callable(flow):
        _check_user_flow(flow, params, d, batched)
    save_at = np.full(int(steps[-1]) + 1, -1, np.int32)
    save_at[steps] = np.arange(len(steps), dtype=np.int32)
    screened, field = _chemical.resolve(params, x0, d, kernel, chemical, field_grid, float(steps[-1] * dt), sharded)
    static = dict(
        n_particles=int(n_particles),
        d=d,
        kernel=kernel,
        flow=flow,
        dt=float(dt),
        n_snapshots=len(steps),
        tile=int(min(tile or _drifts.default_tile(int(n_particles), batch), n_particles)),
        drift=drift,
        grid=grid,
        screened=screened,
        field=field,
    )
    return t, jnp.asarray(save_at), x0, static


def simulate(
    key,
    params: Params = Params(),
    times=(0.1,),
    *,
    n_particles: int | None = None,
    x0=None,
    d: int = 2,
    kernel: str = "blob",
    flow=None,
    dt: float = DEFAULT_DT,
    tile: int | None = None,
    check: bool = True,
    mesh=None,
    axis: str | None = None,
    method: str = "ring",
    drift: str = "auto",
    grid: int | None = None,
    progress: bool = False,
    chemical: str = "equilibrium",
    field_grid: int | None = None,
) -> Trajectory:
    r"""Runs the IPM and returns snapshots at ``times``.

    Args:
      key: a ``jax.random`` key: it draws the initial law (if ``x0`` is None) and the noise.
      params: `Params` (traced).
      times: increasing snapshot times, whole multiples of ``dt``; ``0`` gives the initial state.
      n_particles: ``J``, when ``x0`` is not given (initial law: uniform on the unit ball).
      x0: ``[J, d]`` initial positions.
      d: space dimension, 2 or 3.
      kernel: ``"blob"`` (default), ``"paper"`` or ``"exact"`` (`ksdp.kernels`).
      flow: ``None``, a name in `ksdp.flows.FLOWS`, or a JAX function ``v(x, params.flow)``.
      dt: Euler--Maruyama step.
      tile: targets per tile of the all-pairs drift.
      check: raise `NonFiniteError` if the run turned non-finite or unstable (`Trajectory.health` or
        `Trajectory.flow_health` above `HEALTH_LIMIT`) or a grid too coarse (`Trajectory.grid_spacing`,
        `Trajectory.field_reach`), and warn (`StepSizeWarning`) where the step biased the second moment
        by more than `STEP_BIAS_LIMIT` of its sampling error (`Trajectory.step_bias`); only outside a
        trace: inside ``jit`` read those fields.
      mesh: a `jax.sharding.Mesh` to split the particles across (``J`` a multiple of its
        devices); ``axis`` names the mesh axis (default: its only one) and ``method`` how sources
        travel, ``"ring"`` or ``"allgather"`` (`ksdp.drifts.pair_sum`). The result equals the
        unsharded run to round-off and comes back sharded along ``J`` (direct drift only).
      drift: how the chemotactic drift is summed: ``"direct"`` (all pairs in tiles, `ksdp.drifts.pair_sum`,
        ``O(J^2)``); ``"pm"`` (particle mesh, `ksdp.particle_mesh`, ``O(J + G^d log G)``, blob kernel
        only; relative error below 1e-3 in 2D at its default grid while the cells stay below delta);
        ``"p3m"`` (the mesh for the far field and the pairs within 5 cells directly: about 1e-3
        whatever the spread, at the cost of those pairs); or ``"auto"`` (default): by `ksdp.drifts.AUTO_MESH`,
        PM in 2D from 10^4 particles; in 3D, P3M from 5 x 10^4 on a CPU (on a GPU the direct sum,
        faster than P3M at every measured J) and PM from 3 x 10^5 on both (where P3M's pairs cost
        hours and PM's error, falling like ``J^-1/2`` at a fixed cell, is below 1e-3 on a compact
        cloud; ``check`` refuses it on a cloud too spread for the grid); else direct.
      grid: mesh nodes per axis (default `ksdp.particle_mesh.DEFAULT_GRID` or ``DEFAULT_P3M_GRID``);
        ``check`` also refuses a PM run whose cells grew past `ksdp.particle_mesh.SPACING_LIMIT` delta.
      progress: show a progress bar over the steps (``tqdm.auto``: a widget in Jupyter), updated from
        inside the compiled scan a hundred times over the run; off by default (the program without it
        has no host callback). Only outside a trace.
      chemical: with ``params.eps > 0``, where the chemical starts: ``"equilibrium"`` (default; the
        elliptic field of the initial law, so ``eps -> 0`` is the elliptic model) or ``"zero"``.
      field_grid: with ``params.eps > 0``, nodes per axis of the chemical's field grid (default
        `ksdp.chemical.DEFAULT_GRID`); refused up front where its cells would exceed delta.

    Returns:
      `Trajectory` with ``particles`` of shape ``[S, J, d]``.

    Example:
      >>> import jax, ksdp
      >>> traj = ksdp.simulate(jax.random.key(0), ksdp.Params(mu=0.0), times=(0.0, 0.001), n_particles=64)
      >>> traj.particles.shape
      (2, 64, 2)
    """
    if x0 is not None:
        if jnp.ndim(x0) != 2:
            raise ValueError(f"x0 must have shape [J, d], got {jnp.shape(x0)}; use ksdp.sweep for a batch.")
        x0 = _check_x0(x0, d)
    _check_one_set(params, flow)
    t, save_at, x0, static = _prepare(
        params,
        times,
        n_particles,
        x0,
        d,
        kernel,
        flow,
        dt,
        tile,
        drift,
        grid,
        sharded=mesh is not None,
        chemical=chemical,
        field_grid=field_grid,
    )
    with _euler.progress_bar(progress, static, save_at, "simulate"):
        if mesh is None:
            buf, *rest = _euler.run_jit(key, params, x0, save_at, **static)
        else:
            buf, *rest = _simulate_mesh(key, params, x0, save_at, static, mesh=mesh, axis=axis, method=method)
        if progress:
            jax.block_until_ready(buf)
    traj = _trajectory(t, buf, rest, static)
    if check and _is_concrete(traj.nonfinite_step):
        raise_if_nonfinite(traj, dt)
    return traj


def _trajectory(t, buf, rest, static: dict) -> Trajectory:
    """The `Trajectory` of a run's outputs (`ksdp.euler.run`'s, after the snapshots): its field reach only
    where the run has a field grid."""
    bad, health, unstable, spacing, reach, flow_health, bias = rest
    reach = reach if static["field"] is not None else None
    return Trajectory(jnp.asarray(t, buf.dtype), buf, bad, health, unstable, spacing, reach, flow_health, bias)


def _check_one_set(params: Params, flow) -> None:
    """`simulate` runs one parameter set: a batched field would broadcast over the coordinates."""
    if not isinstance(params, Params):
        raise TypeError(f"params must be ksdp.Params, got {type(params).__name__}.")
    names = ("chi", "mu", "mass", "delta", "eps", "k") + (("flow",) if flow is None or isinstance(flow, str) else ())
    for name in names:
        shape = np.shape(getattr(params, name))
        if shape != ():
            raise ValueError(
                f"params.{name} has shape {shape}, but simulate runs one parameter set and needs scalars; "
                f"use ksdp.sweep to run a batch of parameter sets."
            )


def broadcast_params(params: Params):
    """Broadcasts every leaf of ``params`` to a common leading batch size ``P``; returns ``(params, P)``."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    sizes = {int(np.shape(leaf)[0]) for leaf in leaves if np.ndim(leaf) >= 1}
    if len(sizes) > 1:
        raise ValueError(f"batched parameters must share one leading size, got sizes {sorted(sizes)}.")
    size = sizes.pop() if sizes else 1
    leaves = [
        jnp.broadcast_to(jnp.asarray(leaf), (size,) + jnp.shape(leaf)[1:])
        if jnp.ndim(leaf) >= 1
        else jnp.full((size,), leaf)
        for leaf in leaves
    ]
    return jax.tree_util.tree_unflatten(tree, leaves), size


def sweep(
    key,
    params: Params,
    times=(0.1,),
    *,
    n_particles: int | None = None,
    x0=None,
    d: int = 2,
    kernel: str = "blob",
    flow=None,
    dt: float = DEFAULT_DT,
    tile: int | None = None,
    check: bool = True,
    mesh=None,
    axis: str | None = None,
    drift: str = "auto",
    grid: int | None = None,
    progress: bool = False,
    chemical: str = "equilibrium",
    field_grid: int | None = None,
) -> Trajectory:
    """`simulate` for a batch of parameter sets in one compiled, ``vmap``-ed program.

    Leaves of ``params`` are scalars (shared) or arrays of a common leading size ``P``. Run ``p``
    uses ``jax.random.split(key, P)[p]``, so it equals ``simulate(keys[p], params[p], ...)``;
    ``key`` may also be those ``P`` keys (``[P]`` typed keys or ``[P, 2]`` raw ones), so a slice
    of the sets runs on its own exactly as it does within the whole batch (`ksdp.make_dataset`
    uses that to save a long sweep in parts). ``x0`` is ``[J, d]`` (shared) or ``[P, J, d]``.

    With ``mesh`` (a `jax.sharding.Mesh`; ``axis`` names its axis, default its only one) the
    parameter sets are split across the devices, ``P`` padded to a multiple of them; the result is
    the same as without (`ksdp.parallel`) and comes back sharded along ``P``.

    ``drift`` and ``grid`` as in `simulate` (the particle mesh works under ``mesh`` here: each device
    runs whole parameter sets); ``progress``, ``chemical`` and ``field_grid`` too (one bar over the steps of the
    whole batch; ``eps`` and ``k`` vary across the batch like any parameter).

    Returns:
      `Trajectory` with ``particles [P, S, J, d]`` and ``nonfinite_step [P]``.
    """
    params, size = broadcast_params(params)
    if x0 is not None:
        x0 = jnp.asarray(x0)
        if x0.ndim == 3:
            if x0.shape[0] != size:
                raise ValueError(f"x0 has {x0.shape[0]} initial states for {size} parameter sets.")
            for x in x0:
                _check_x0(x, d)
        elif x0.ndim == 2:
            x0 = _check_x0(x0, d)
        else:
            raise ValueError(f"x0 must have shape [J, d] or [P, J, d], got {x0.shape}.")
    t, save_at, x0, static = _prepare(
        params,
        times,
        n_particles,
        x0,
        d,
        kernel,
        flow,
        dt,
        tile,
        drift,
        grid,
        batched=True,
        chemical=chemical,
        field_grid=field_grid,
        batch=-(-size // getattr(mesh, "size", 1)),  # the sets one device runs at once (the mesh is checked later)
    )
    keys = _set_keys(key, size)
    with _euler.progress_bar(progress, static, save_at, "sweep"):
        if mesh is None:
            buf, *rest = _euler.run_batched_jit(keys, params, x0, save_at, **static)
        else:
            buf, *rest = _sweep_mesh(keys, params, x0, save_at, static, mesh=mesh, axis=axis)
        if progress:
            jax.block_until_ready(buf)
    traj = _trajectory(t, buf, rest, static)
    if check and _is_concrete(traj.nonfinite_step):
        raise_if_nonfinite(traj, dt)
    return traj


def _set_keys(key, size: int):
    """The ``[size]`` keys of a `sweep`: ``jax.random.split(key, size)``, or ``key`` itself if it holds that many."""
    key = key if isinstance(key, jax.Array) else jnp.asarray(key)
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    if key.ndim == (0 if typed else 1):
        return jax.random.split(key, size)
    if key.ndim != (1 if typed else 2):
        raise ValueError(f"key must be one jax.random key or one per parameter set, got shape {key.shape}.")
    if key.shape[0] != size:
        raise ValueError(f"key holds {key.shape[0]} keys for {size} parameter sets: pass one key, or exactly {size}.")
    return key


def second_moment(x):
    r"""$m_2 = \frac1J\sum_j |X^j|^2$ over the particle axis ``-2``; ``x`` is ``[..., J, d]``."""
    return jnp.mean(jnp.sum(jnp.asarray(x) ** 2, axis=-1), axis=-1)


# --------------------------------------------------------------------------------------------
# Simulation sharded along particles
# --------------------------------------------------------------------------------------------
def _run_particles(
    key,
    params,
    x0,
    save_at,
    *,
    mesh,
    axis,
    method,
    n_particles,
    d,
    kernel,
    flow,
    dt,
    n_snapshots,
    tile,
    drift,
    grid,
    progress=0,
    screened=False,
    field=None,
):
    """`ksdp.euler.run` with the particles split across ``mesh[axis]`` (see `ksdp.parallel`); the elliptic, unscreened
    model only (`ksdp.chemical.resolve` refuses the others)."""
    n_dev = mesh.shape[axis]
    n_local = n_particles // n_dev
    init_key, noise_key = jax.random.split(key)
    x_all = uniform_ball(init_key, n_particles, d) if x0 is None else x0
    v = _flows.resolve_flow(flow, d)

    def local(x_all, params):
        start = jax.lax.axis_index(axis) * n_local
        scale = params.chi * params.mass / n_particles

        def parts(x, aux):
            chem = _drifts.pair_sum_local(
                x, x, params.delta, axis=axis, n_dev=n_dev, kernel=kernel, tile=tile, method=method
            )
            adv = jax.vmap(v, in_axes=(0, None))(x, params.flow).astype(x.dtype)
            return -scale * chem, adv, jnp.zeros((), x.dtype), aux  # direct drift only (resolve_drift)

        def noise(n):  # the unsharded run's [J, d] noise, of which this device keeps its rows: O(J d)
            xi = jax.random.normal(jax.random.fold_in(noise_key, n), (n_particles, d), x_all.dtype)
            return jax.lax.dynamic_slice_in_dim(xi, start, n_local)

        x = jax.lax.dynamic_slice_in_dim(x_all, start, n_local)
        noise_scale = jnp.sqrt(2.0 * params.mu * dt).astype(x.dtype)
        out = _euler.integrate(x, save_at, parts, noise, noise_scale, dt, n_snapshots, params.delta, progress=progress)
        never = jnp.iinfo(jnp.int32).max

        def first(s):  # the first step on any device
            s = jax.lax.pmin(jnp.where(s < 0, never, s), axis)
            return jnp.where(s == never, -1, s)

        return (
            out.particles,
            first(out.nonfinite_step),
            jax.lax.pmax(out.health, axis),
            first(out.unstable_step),
            out.grid_spacing,
            jnp.zeros((), x.dtype),  # no field grid (the elliptic model only)
            jax.lax.pmax(out.flow_health, axis),
            jax.lax.psum(out.bias_sum, axis) / n_particles,
        )

    return jax.shard_map(
        local, mesh=mesh, in_specs=(P(), P()), out_specs=(P(None, axis),) + (P(),) * 7, check_vma=False
    )(x_all, params)


_run_particles_jit = jax.jit(_run_particles, static_argnames=("mesh", "axis", "method") + _euler.STATIC)


def _simulate_mesh(key, params, x0, save_at, static: dict, *, mesh, axis=None, method="ring"):
    """Back end of ``ksdp.simulate(..., mesh=)``: ``(snapshots [S, J, d] sharded, nonfinite_step)``; the
    step is gathered, so every process can read it."""
    axis, n_dev = _parallel.mesh_axis(mesh, axis)
    _parallel.check_method(method)
    j = static["n_particles"]
    _parallel.check_divisible(j, n_dev, "n_particles (J)", "choose J accordingly")
    static = dict(static, tile=int(min(static["tile"], j // n_dev)))
    buf, *rest = _run_particles_jit(key, params, x0, save_at, mesh=mesh, axis=axis, method=method, **static)
    return (buf, *(jnp.asarray(_parallel.gather(r)) for r in rest))


# --------------------------------------------------------------------------------------------
# Parameter sweeps sharded along the parameter axis
# --------------------------------------------------------------------------------------------
def _run_sets(keys, params, x0, save_at, *, mesh, axis, **static):
    x_spec = P() if x0 is None or x0.ndim == 2 else P(axis)

    def local(keys, params, x0):
        return _euler.run_batched(keys, params, x0, save_at, **static)

    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(axis), P(axis), x_spec),
        out_specs=(P(axis),) * 8,
        check_vma=False,
    )(keys, params, x0)


_run_sets_jit = jax.jit(_run_sets, static_argnames=("mesh", "axis") + _euler.STATIC)


def _sweep_mesh(keys, params, x0, save_at, static: dict, *, mesh, axis=None):
    """Back end of ``ksdp.sweep(..., mesh=)``: ``P`` is padded to a multiple of the devices (the
    padding repeats the last set and is dropped). Returns ``(snapshots [P, S, J, d] sharded,
    nonfinite [P])``, the latter gathered so every process can read it."""
    axis, n_dev = _parallel.mesh_axis(mesh, axis)
    size = keys.shape[0]
    take = _parallel.pad_rows(size, n_dev)
    if take is not None:
        keys, params = keys[take], jax.tree_util.tree_map(lambda a: a[take], params)
        x0 = x0 if x0 is None or x0.ndim == 2 else x0[take]
    buf, *rest = _run_sets_jit(keys, params, x0, save_at, mesh=mesh, axis=axis, **static)
    return (buf[:size] if take is not None else buf, *(jnp.asarray(_parallel.gather(r)[:size]) for r in rest))
