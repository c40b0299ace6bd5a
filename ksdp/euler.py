r"""The Euler--Maruyama scan of the IPM (`ksdp.ipm`): one compiled program per run's static settings.

`integrate` is the scan from a state, its drift a function it is given; `run` builds that drift (the
direct or mesh sum of `ksdp.drifts`, the flow, and with ``eps > 0`` the chemical's field of
`ksdp.chemical`) and the noise, and `run_batched` runs it over a batch of parameter sets. `ksdp.simulate`
and `ksdp.sweep` validate their inputs and call these; the particle-sharded run of `ksdp.ipm` reuses
`integrate` with its own drift and noise.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, NamedTuple

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

MAX_STEPS = 10**9  # Euler steps one run may take (a dt of 1e-300 would otherwise overflow the step count)


def time_grid(times, dt: float):
    """Validates snapshot ``times`` against ``dt``.

    Returns:
      ``(times, steps)``: float64 numpy times ``[S]`` and the integer step count of each.
    """
    if not (isinstance(dt, (int, float, np.floating)) and math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive finite float, got {dt!r}.")
    t = np.atleast_1d(np.asarray(times, dtype=np.float64))
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"times must be a non-empty 1-D sequence of snapshot times, got shape {t.shape}.")
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ValueError(f"times must be finite and >= 0, got {t.tolist()}.")
    if np.any(np.diff(t) <= 0):
        raise ValueError(f"times must be strictly increasing, got {t.tolist()}.")
    steps = np.rint(t / dt)
    bad = np.abs(steps * dt - t) > 1e-6 * np.maximum(t, dt)
    if np.any(bad):
        raise ValueError(
            f"times {t[bad].tolist()} are not whole multiples of dt={dt}; choose times on the dt grid "
            f"or a dt that divides them."
        )
    if steps[-1] > MAX_STEPS:
        raise ValueError(
            f"times up to {t[-1]:g} at dt={dt!r} need {steps[-1]:.3g} Euler steps (more than {MAX_STEPS:.0e}); "
            f"increase dt."
        )
    return t, steps.astype(np.int64)


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

    Returns a `Scan`: the snapshots ``[S, *x.shape]``, the first non-finite step, the health numbers of
    `ksdp.Trajectory` over this device's particles (the interaction's and the flow's step; the largest grid
    spacing, elementwise of the shape of ``spacing0``, default a scalar) and the interaction's bias of the
    second moment at each snapshot as a *sum* over this device's particles (`accuracy`). `run` and the
    particle-sharded run of `ksdp.ipm` differ only in ``drift`` and ``noise``. ``progress > 0`` (static)
    reports the step to the host every ``progress`` steps (`tick`); 0 compiles no report.
    """
    buf = jnp.zeros((n_snapshots,) + x.shape, x.dtype)
    buf = jax.lax.cond(save_at[0] >= 0, lambda b: b.at[save_at[0]].set(x), lambda b: b, buf)
    zero = jnp.zeros((), x.dtype)

    def step(carry, inp):
        x, buf, bad, health, unstable, spacing, aux, acc = carry
        n, slot = inp
        chem, adv, s, aux = drift(x, aux)
        spacing = jnp.maximum(spacing, s)
        h = dt * jnp.sqrt(jnp.max(jnp.sum(chem * chem, axis=-1))) / delta
        health = jnp.maximum(health, h)
        # the step before this one (from n = 2): how the flow changed along it, and the bias it left
        acc, h_flow = accuracy(acc, x, chem, adv, dt, n > 1)
        over = ~(h <= HEALTH_LIMIT) | ~(h_flow <= HEALTH_LIMIT)  # NaN counts as unstable
        unstable = jnp.where((unstable < 0) & over, jnp.where(h <= HEALTH_LIMIT, n - 1, n), unstable)
        x = x + dt * (chem + adv) + noise_scale * noise(n)
        bad = jnp.where((bad < 0) & ~jnp.all(jnp.isfinite(x)), n, bad)
        buf = jax.lax.cond(slot >= 0, lambda b: b.at[slot].set(x), lambda b: b, buf)
        acc = acc._replace(bias=jax.lax.cond(slot >= 0, lambda b: b.at[slot].set(acc.total), lambda b: b, acc.bias))
        if progress:
            jax.lax.cond(n % progress == 0, lambda: jax.debug.callback(tick, n), lambda: None)
        return (x, buf, bad, health, unstable, spacing, aux, acc), None

    steps = jnp.arange(1, save_at.shape[0], dtype=jnp.int32)
    spacing0 = zero if spacing0 is None else spacing0
    acc = Accuracy(x, *(jnp.zeros_like(x),) * 2, zero, zero, jnp.zeros((n_snapshots,), x.dtype))
    init = (x, buf, jnp.int32(-1), zero, jnp.int32(-1), spacing0, aux, acc)
    (x, buf, bad, health, unstable, spacing, _, acc), _ = jax.lax.scan(step, init, (steps, save_at[1:]))
    return Scan(buf, bad, health, unstable, spacing, acc.flow_health, acc.bias)


class Scan(NamedTuple):
    """What `integrate` returns (`ksdp.Trajectory` names the health numbers)."""

    particles: Any
    nonfinite_step: Any
    health: Any
    unstable_step: Any
    grid_spacing: Any
    flow_health: Any
    bias_sum: Any  # [S]: the second moment's bias, summed over this device's particles (divide by J)


class Accuracy(NamedTuple):
    """The scan's memory of the step before: its start ``x``, interaction ``chem`` and flow ``adv``; the
    largest flow step so far; the running bias sum and its value at each snapshot."""

    x: Any
    chem: Any
    adv: Any
    flow_health: Any
    total: Any
    bias: Any


def accuracy(acc: Accuracy, x, chem, adv, dt, started):
    r"""Updates the accuracy record with the step that ended at ``x``, where the interaction's drift
    (with ``eps > 0`` the chemical's whole field) is ``chem`` and the flow ``adv``; ``started`` is false
    at the first step, which has no step before it.

    * The flow's step, $dt\,\max_j |v(x_j) - v(x^-_j)| / |x_j - x^-_j|$: ``dt`` times the rate at which
      the flow changed along each particle's last step, a lower bound of ``dt`` times its Lipschitz
      constant. Explicit Euler follows a flow while it is well below 1 (`HEALTH_LIMIT`).
    * The interaction's local error in the second moment $m_2 = \langle|x|^2\rangle$. One
      Euler--Maruyama step from $x$ with drift $b$ adds $dt^2 |b|^2$ to $E|x|^2$ where the exact flow adds
      $dt^2 (|b|^2 + x\cdot Lb + 2\mu\nabla\cdot b)$, $L = b\cdot\nabla + \mu\Delta$. For the
      interaction's share $c$ of $b$: with $\Delta c = c(x') - c(x)$ along the step $x' = x + dt\,b +
      \sigma\xi$, $E[\Delta c] = dt\,Lc$ and $E[\sigma\xi\cdot\Delta c] = \sigma^2\nabla\cdot c$, so the
      sum over particles of $-dt\,(x' - dt\,b)\cdot\Delta c$ estimates its local error $-dt^2 (x\cdot Lc
      + 2\mu\nabla\cdot c)$ from what the scan computes anyway. Summed over the steps: the run's
      first-order bias of $m_2$ where the dynamics neither damp nor amplify it (docs/model.md, "Numerical
      health"). The flow's share is left out: under a cellular flow its local errors in $m_2$ average out
      along the paths, which the plain sum cannot see.
    """
    dx = x - acc.x
    dist = jnp.sqrt(jnp.sum(dx * dx, axis=-1))
    change = jnp.sqrt(jnp.sum((adv - acc.adv) ** 2, axis=-1))
    rate = jnp.where(dist > 0, change / jnp.where(dist > 0, dist, 1), 0)
    h_flow = jnp.where(started, dt * jnp.max(rate), 0).astype(x.dtype)
    term = -dt * jnp.sum((x - dt * (acc.chem + acc.adv)) * (chem - acc.chem))
    total = acc.total + jnp.where(started, term, 0).astype(x.dtype)
    # the largest finite value: a run that went on to overflow still shows what it crossed first
    flow_health = jnp.fmax(acc.flow_health, h_flow)
    return acc._replace(x=x, chem=chem, adv=adv, flow_health=flow_health, total=total), h_flow


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
    out = integrate(
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
    spacing, reach = (out.grid_spacing, jnp.zeros((), x.dtype)) if field is None else out.grid_spacing
    # in the order of ksdp.Trajectory's fields after the times (its field_reach 0 for the elliptic model)
    return (*out[:4], spacing, reach, out.flow_health, out.bias_sum / n_particles)


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
