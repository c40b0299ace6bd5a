r"""The Euler--Maruyama scan of the IPM (`ksdp.ipm`): one compiled program per run's static settings.

`integrate` is the scan from a state, its drift a function it is given; `run` builds that drift (the
direct or mesh sum of `ksdp.drifts`, the flow, and with ``eps > 0`` the chemical's field of
`ksdp.chemical`) and the noise, and `run_batched` runs it over a batch of parameter sets. `ksdp.simulate`
and `ksdp.sweep` validate their inputs and call these; the particle-sharded run of `ksdp.ipm` reuses
`integrate` with its own drift and noise.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

from ksdp import chemical as _chemical
from ksdp import drifts as _drifts
from ksdp import flows as _flows
from ksdp import particle_mesh as _pm
from ksdp.initial import uniform_ball

HEALTH_LIMIT = 1.0  # one Euler step may move a particle at most delta by the interaction alone

STATIC = (
    "n_particles",
    "d",
    "kernel",
    "flow",
    "dt",
    "n_snapshots",
    "tile",
    "drift",
    "grid",
    "progress",
    "screened",
    "field",
)
# the bar an opt-in progress report updates from inside the compiled scan (`simulate`'s ``progress``)
BAR = {"bar": None}


def tick(n):
    bar = BAR["bar"]
    if bar is not None:
        n = int(np.max(np.asarray(n)))  # under vmap or on several devices: the step all have reached
        bar.update(max(0, n - bar.n))


def integrate(x, save_at, drift, noise, noise_scale, dt, n_snapshots, delta, aux=(), progress: int = 0, spacing0=None):
    """The Euler--Maruyama scan from ``x``: ``x += dt * (chem + adv) + noise_scale * noise(n)`` at step
    ``n``, with ``(chem, adv, grid spacing, aux) = drift(x, aux)``; ``aux`` is carried from step to
    step (the mesh drifts' `ksdp.particle_mesh.Plan`; ``()`` for the direct one).

    Returns ``(snapshots [S, *x.shape], first non-finite step or -1, health, first unstable step or
    -1, largest grid spacing)`` (`Trajectory`; ``health`` over this device's particles; the spacing is the
    elementwise largest of what ``drift`` returns, of the shape of ``spacing0``, default a scalar). `run` and
    the particle-sharded run of `ksdp.parallel` differ only in ``drift`` and ``noise``. ``progress > 0``
    (static) reports the step to the host every ``progress`` steps (`tick`); 0 compiles no report.
    """
    buf = jnp.zeros((n_snapshots,) + x.shape, x.dtype)
    buf = jax.lax.cond(save_at[0] >= 0, lambda b: b.at[save_at[0]].set(x), lambda b: b, buf)

    def step(carry, inp):
        x, buf, bad, health, unstable, spacing, aux = carry
        n, slot = inp
        chem, adv, s, aux = drift(x, aux)
        spacing = jnp.maximum(spacing, s)
        h = dt * jnp.sqrt(jnp.max(jnp.sum(chem * chem, axis=-1))) / delta
        health = jnp.maximum(health, h)
        unstable = jnp.where((unstable < 0) & ~(h <= HEALTH_LIMIT), n, unstable)  # NaN h counts as unstable
        x = x + dt * (chem + adv) + noise_scale * noise(n)
        bad = jnp.where((bad < 0) & ~jnp.all(jnp.isfinite(x)), n, bad)
        buf = jax.lax.cond(slot >= 0, lambda b: b.at[slot].set(x), lambda b: b, buf)
        if progress:
            jax.lax.cond(n % progress == 0, lambda: jax.debug.callback(tick, n), lambda: None)
        return (x, buf, bad, health, unstable, spacing, aux), None

    steps = jnp.arange(1, save_at.shape[0], dtype=jnp.int32)
    spacing0 = jnp.zeros((), x.dtype) if spacing0 is None else spacing0
    init = (x, buf, jnp.int32(-1), jnp.zeros((), x.dtype), jnp.int32(-1), spacing0, aux)
    (x, buf, bad, health, unstable, spacing, _), _ = jax.lax.scan(step, init, (steps, save_at[1:]))
    return buf, bad, health, unstable, spacing


def run(
    key,
    params,
    x0,
    save_at,
    *,
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
    init_key, noise_key = jax.random.split(key)
    x = uniform_ball(init_key, n_particles, d) if x0 is None else x0
    mesh = drift in ("pm", "p3m")
    k = params.k if screened else None
    cutoff = _drifts.mesh_cutoff(drift)
    if field is None:
        elliptic = True
    else:  # (field grid, start): the chemical's lag w on its own grid (ksdp.chemical)
        field_grid, start = field
        elliptic = start == "equilibrium"  # c = c_e + w; the zero start has c = w alone
        v = _flows.resolve_flow(flow, d)

    def parts(y, aux):
        mesh_plan, state = aux if field is not None else (aux, None)
        if elliptic:
            if mesh:  # the mesh follows the cloud; its kernel transforms are kept while its cells are
                mesh_plan = _pm.plan(y, params.delta, grid, cutoff, mesh_plan, k=k)
            chem, adv, s = _drifts.velocity_parts(
                y, params, kernel=kernel, flow=flow, tile=tile, drift=drift, grid=grid, mesh_plan=mesh_plan, k=k
            )
        else:
            chem = jnp.zeros_like(y)
            adv = jax.vmap(v, in_axes=(0, None))(y, params.flow).astype(y.dtype)
            s = jnp.zeros((), y.dtype)
        if field is None:
            return chem, adv, s, mesh_plan
        lag, state, reach = _chemical.step(y, state, params, grid=field_grid, dt=dt, start=start)
        return chem + lag, adv, jnp.stack([s, reach]), (mesh_plan, state)

    mesh_plan = _pm.plan(x, params.delta, grid, cutoff, k=k) if (mesh and elliptic) else ()
    if field is not None:
        t_end = (save_at.shape[0] - 1) * dt
        aux = (mesh_plan, _chemical.init(x, params, field_grid, t_end, start))
        spacing0 = jnp.zeros((2,), x.dtype)
    else:
        aux, spacing0 = mesh_plan, None
    buf, bad, health, unstable, spacing = integrate(
        x,
        save_at,
        parts,
        lambda n: jax.random.normal(jax.random.fold_in(noise_key, n), x.shape, x.dtype),
        jnp.sqrt(2.0 * params.mu * dt).astype(x.dtype),
        dt,
        n_snapshots,
        params.delta,
        aux,
        progress,
        spacing0,
    )
    if field is None:
        return buf, bad, health, unstable, spacing
    return buf, bad, health, unstable, spacing[0], spacing[1]


run_jit = jax.jit(run, static_argnames=STATIC)


def run_batched(keys, params, x0, save_at, **static):
    """`_run` over a leading batch of parameter sets (and of initial states, if ``x0`` is ``[P, J, d]``).

    A batch of one set runs the unbatched program with a unit axis added: XLA on a CPU compiled the
    ``vmap`` of a single set into a program several times slower than the unbatched one (or than a batch
    of two), and the result is the same run (`simulate` of that set), bit for bit.
    """
    x_axis = None if x0 is None or x0.ndim == 2 else 0
    if keys.shape[0] == 1:
        x = x0 if x_axis is None else x0[0]
        out = run(keys[0], jax.tree_util.tree_map(lambda a: a[0], params), x, save_at, **static)
        return jax.tree_util.tree_map(lambda a: a[None], out)
    return jax.vmap(lambda k, p, x: run(k, p, x, save_at, **static), in_axes=(0, 0, x_axis))(keys, params, x0)


run_batched_jit = jax.jit(run_batched, static_argnames=STATIC)


@contextlib.contextmanager
def progress_bar(progress, static: dict, save_at, desc: str):
    """With ``progress``: sets ``static["progress"]`` (a report every hundredth of the steps) and shows a
    ``tqdm.auto`` bar that `tick` advances while the run computes; closes it however the run ends."""
    if not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress must be True or False, got {progress!r}.")
    if not progress:
        yield
        return
    from tqdm.auto import tqdm

    n_steps = int(save_at.shape[0]) - 1
    static["progress"] = max(1, n_steps // 100)
    BAR["bar"] = tqdm(total=n_steps, unit="step", desc=desc, leave=False)
    try:
        yield
    finally:
        BAR["bar"].close()
        BAR["bar"] = None
