r"""Numerical health of an IPM run: what `ksdp.simulate` and `ksdp.sweep` check after the scan.

The scan (`ksdp.euler`) records, per run, the interaction's and the flow's largest step, the first
non-finite and the first unstable step, the grids' reach and the step's bias of the second moment
(`ksdp.Trajectory`). `raise_if_nonfinite` turns what a checked run must not return into a
`NonFiniteError` that names the step or the grid and what to change, and warns (`StepSizeWarning`)
where the step biased the law by more than the run's sampling error allows (docs/model.md, "Numerical
health").
"""

from __future__ import annotations

import math
import warnings

import jax.numpy as jnp
import numpy as np

from ksdp import euler as _euler
from ksdp import parallel as _parallel
from ksdp import particle_mesh as _pm
from ksdp._checks import is_concrete as _is_concrete


class NonFiniteError(FloatingPointError):
    """A simulation produced non-finite positions, or is exploding (`ksdp.Trajectory.health` or
    ``flow_health`` above `HEALTH_LIMIT`), or a grid was too coarse (``grid_spacing`` above
    `ksdp.particle_mesh.SPACING_LIMIT`, ``field_reach`` above 1); the message names the step or the grid
    and the remedy."""


class StepSizeWarning(UserWarning):
    """A run's time step biased its second moment by more than `STEP_BIAS_LIMIT` of its sampling
    standard error (`Trajectory.step_bias`): the run is stable, but its law is less accurate than its
    ``J`` particles suggest. ``warnings.simplefilter("error", ksdp.StepSizeWarning)`` makes it an error."""


# the interaction may move a particle at most delta in one Euler step, the flow change by at most its own
# velocity along one (Trajectory.health, Trajectory.flow_health); beyond, the run is unstable
HEALTH_LIMIT = _euler.HEALTH_LIMIT
# Trajectory.step_bias is allowed half the sampling standard error of the second moment over the run's J
# particles: a bias b adds b^2 to the squared error, so at half a standard error the root-mean-square error
# of m2 grows by at most 12% (sqrt(1 + 0.5^2) = 1.118) over the sampling error alone
STEP_BIAS_LIMIT = 0.5


def raise_if_nonfinite(traj, dt: float):
    """Turns ``traj.nonfinite_step``, ``traj.unstable_step`` and the grids' limits (data) into a
    `NonFiniteError`, and warns (`StepSizeWarning`) where the step's bias of the second moment exceeds
    `STEP_BIAS_LIMIT` of its sampling error."""
    where = lambda runs, size: f" in run(s) {runs.tolist()} of the batch" if size > 1 else ""
    bad = np.atleast_1d(np.asarray(traj.nonfinite_step))
    unstable = np.atleast_1d(np.asarray(traj.unstable_step if traj.unstable_step is not None else -1))
    if np.any(unstable >= 0):
        runs = np.flatnonzero(unstable >= 0)
        first = int(unstable[runs[0]])
        health = float(np.max(np.atleast_1d(np.asarray(traj.health))[runs]))
        flow = traj.flow_health
        flow = float(np.max(np.atleast_1d(np.asarray(flow))[runs])) if flow is not None and _is_concrete(flow) else 0.0
        whats, remedies = [], []
        if flow > HEALTH_LIMIT:  # the flow's record keeps its largest finite value
            whats.append(
                f"the flow's velocity changed by {flow:.3g} times itself along one Euler step (dt times its rate "
                f"of strain; the limit is {HEALTH_LIMIT:g}), faster than an explicit step can follow"
            )
            remedies.append(f"reduce dt below {dt * 0.2 / flow:.3g} (now {dt:g}; the flow's step then stays below 0.2)")
        if not health <= HEALTH_LIMIT or not whats:
            whats.append(
                f"one Euler step moved a particle more than delta by the interaction alone (largest: {health:.3g} "
                f"delta; healthy runs stay below 0.2)"
            )
            remedies.append(f"reduce dt (now {dt:g}), increase delta, or use a regularised kernel")
        what, remedy = "; ".join(whats), "; ".join(remedies)
        raise NonFiniteError(
            f"the simulation became unstable at step {first} (t = {first * dt:.6g}){where(runs, unstable.size)}: "
            f"{what}. Its positions are not a solution: {remedy} (check=False returns the run anyway)."
        )
    if np.any(bad >= 0):
        runs = np.flatnonzero(bad >= 0)
        first = int(bad[runs[0]])
        raise NonFiniteError(
            f"the simulation turned non-finite at step {first} (t = {first * dt:.6g}){where(runs, bad.size)}; "
            f"reduce dt, increase delta, or use a regularised kernel."
        )
    reach = np.atleast_1d(np.asarray(traj.field_reach if traj.field_reach is not None else 0.0))
    if np.any(~(reach <= 1.0)):
        runs = np.flatnonzero(~(reach <= 1.0))
        raise NonFiniteError(
            f"the chemical's field grid was too small{where(runs, reach.size)}: the cloud's extent plus the chemical's "
            f"reach sqrt(t / eps) came to {float(np.max(reach[runs])):.3g} times its half-width (the limit is 1), so "
            f"the periodic grid's images pulled on the cloud. Use a larger eps, a shorter run, or a flow that keeps "
            f"the cloud compact (check=False returns the run anyway)."
        )
    spacing = np.atleast_1d(np.asarray(traj.grid_spacing if traj.grid_spacing is not None else 0.0))
    if np.any(spacing > _pm.SPACING_LIMIT):
        runs = np.flatnonzero(spacing > _pm.SPACING_LIMIT)
        raise NonFiniteError(
            f"the particle-mesh grid was too coarse{where(runs, spacing.size)}: its largest cell reached "
            f"{float(np.max(spacing[runs])):.3g} delta (the limit is {_pm.SPACING_LIMIT:g}; the drift's error grows "
            f"like its square). The cloud spread too far for the grid: pass a larger grid, or drift='p3m' (its "
            f"error does not depend on the cells) or 'direct' (check=False returns the run anyway)."
        )
    _warn_step_bias(traj, dt)
    return traj


def _warn_step_bias(traj, dt: float) -> None:
    """`StepSizeWarning` where ``traj.step_bias`` exceeds `STEP_BIAS_LIMIT` standard errors of the
    snapshot's second moment $\\langle|x|^2\rangle$ over its particles."""
    if traj.step_bias is None or not (_is_concrete(traj.step_bias) and _is_concrete(traj.particles)):
        return  # under a transformation (grad of a run, say) the bias is traced: nothing to compare on the host
    x = jnp.asarray(traj.particles)
    r2 = jnp.sum(x * x, axis=-1)  # [..., S, J]
    # reduced where the particles live (across processes after jax.distributed), then read on every host
    se, m2, bias = _parallel.gather((jnp.std(r2, axis=-1), jnp.mean(r2, axis=-1), traj.step_bias))
    se = se / math.sqrt(x.shape[-2])
    ratio = np.abs(bias) / np.where(se > 0, se, np.inf)
    if not np.any(ratio > STEP_BIAS_LIMIT):
        return
    at = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    worst, bias, m2 = float(ratio[at]), float(bias[at]), float(m2[at])
    runs = np.flatnonzero(np.any(ratio.reshape(-1, ratio.shape[-1]) > STEP_BIAS_LIMIT, axis=-1))
    batch = f" (run(s) {runs.tolist()} of the batch)" if ratio.ndim > 1 else ""
    warnings.warn(
        f"the time step biased the second moment at t = {float(np.asarray(traj.times)[at[-1]]):.6g}{batch} by about "
        f"{bias:+.3g} (of {m2:.4g}): {worst:.2g} standard errors of its {x.shape[-2]} particles, where "
        f"{STEP_BIAS_LIMIT:g} is allowed (Trajectory.step_bias). The run is stable, but its law is less accurate "
        f"than J suggests: the bias is first order in dt, so dt = {dt * STEP_BIAS_LIMIT / worst:.3g} (now {dt:g}) "
        f"brings it under the limit.",
        StepSizeWarning,
        stacklevel=4,
    )
