r"""A deterministic reference: the radially symmetric, flow-free Keller--Segel model.

The IPM of `ksdp.ipm` approximates, as $J \to \infty$, the mean-field equation

$$
\partial_t \rho = \mu \Delta\rho + \chi M \nabla\cdot\big(\rho\, \nabla K_\delta * \rho\big),
\qquad \int\rho = 1,
$$

and, as $\delta \to 0$, the Keller--Segel model itself ($K_\delta = K$). For a radial law the
whole state is the enclosed mass $m(r, t) = P(|X| \le r)$, the CDF of the particles' radii, and
the equation is one-dimensional:

$$
\partial_t m = \mu\Big(\partial_r^2 m - \frac{d-1}{r}\partial_r m\Big) - u(r, t)\,\partial_r m,
\qquad m(0) = 0,\ m(\infty) = 1,
$$

with the radial drift $u = -\chi M\, \nabla K_\delta * \rho \cdot \hat{x}$.

* **Unregularised** (``delta=None``): by Newton's theorem $u = -\chi M\, m / (\omega_d r^{d-1})$
  ($\omega_2 = 2\pi$, $\omega_3 = 4\pi$). In the variable $s = r^d$, $Q(s) = m(s^{1/d})$,

  $$
  \partial_t Q = \mu d^2 s^{2 - 2/d}\,\partial_s^2 Q + \frac{\chi M d}{\omega_d}\, Q\,\partial_s Q,
  $$

  whose coefficients are smooth at the origin. The uniform initial law is $Q = \min(s, 1)$. A grid
  geometric in $s$ resolves the collapsing core down to $s \sim 10^{-12}$; the density at the
  origin, $\rho(0) = d\,\partial_s Q(0) / \omega_d$, blows up at the time `blowup_time` returns.
  Without diffusion the uniform core would collapse like a pressureless dust,
  $\rho(0, t) = \rho_0 / (1 - \chi M \rho_0 t)$, at $T = 1 / (\chi M \rho_0)$ ($1/16$ in the
  paper's 2D case, $M = 16\pi$; the solver reproduces it as $\mu \to 0$). Diffusion at the
  core's edge slows the collapse: with $\mu = 1$ the density at the origin blows up at
  $T^* = 0.0960$ (grid-converged to $10^{-4}$), well before the virial bound $0.125$ at which
  $m_2 = 1/2 - 4t$ would reach 0.
* **Blob kernel** (``delta > 0``): $K_\delta = K * \eta_\delta$ with the algebraic mollifier
  $\eta_\delta = \Delta K_\delta$ (2D: $\delta^2 / (\pi (r^2+\delta^2)^2)$; 3D: Plummer's
  $3\delta^2 / (4\pi(r^2+\delta^2)^{5/2})$). The field of a thin shell of radius $a$ has a closed
  form (`shell_field`), so $u(r) = -\chi M \sum_{\text{cells}} \Delta m \, F(r, a)$ with a Gauss
  rule over each cell. This mean-field limit exists for all time; past $T^*$ it holds a core of
  size $\sim\delta$ that the unregularised model does not have.

The IPM's error against the blob reference is the particle error (``J``, ``dt``); the blob
reference against the unregularised one is the regularisation error (``delta``). Both are solved by
the method of lines with scipy's BDF (a stiff integrator) and an exact banded or dense Jacobian.

Validation (``tests/test_reference.py``): the exact second-moment slope $2d\mu - \chi M/(2\pi)$ of
the unregularised 2D model, pure diffusion $m_2(t) = m_2(0) + 2 d\mu t$ in 2D and 3D, the uniform
core's blow-up time $1 / (\chi M \rho_0)$, convergence under grid refinement, and the blob reference
tending to the unregularised one as $\delta \to 0$. Mass is conserved by construction
($m(\infty) = 1$ is the boundary condition); the tests check that $m$ stays a CDF.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
from scipy import sparse
from scipy.integrate import solve_ivp
from scipy.sparse import linalg as _sparse_linalg

SPHERE = {2: 2 * math.pi, 3: 4 * math.pi}  # omega_d, the area of the unit sphere
BALL = {2: math.pi, 3: 4 * math.pi / 3}  # volume of the unit ball


class RadialSolution(NamedTuple):
    """Enclosed mass ``m(r, t)`` at the requested times.

    Attributes:
      times: ``[S]`` the times reached (fewer than requested if the unregularised model blew up).
      r: ``[G + 1]`` grid radii, ``r[0] = 0``.
      mass: ``[S, G + 1]`` enclosed mass fraction, ``mass[:, 0] = 0``, ``mass[:, -1] = 1``.
      d: dimension.
      delta: regularisation length (``None``: unregularised).
      blowup_time: the time the density at the origin passed ``blowup_density``, else ``None``.
      eps: the chemical's time scale (``0``: the elliptic model).
      k: the chemical's decay rate (screening length ``1 / k``).
      chemical: the chemical's start for ``eps > 0`` (``"equilibrium"`` or ``"zero"``), else ``None``.
      flux: ``[S, G + 1]`` the chemical's outward flux through the sphere of radius ``r`` per unit of
        mass, ``q = omega_d r^(d-1) c_r / M`` (``eps > 0``; the elliptic model has ``q = -m``), else ``None``.
    """

    times: np.ndarray
    r: np.ndarray
    mass: np.ndarray
    d: int
    delta: float | None
    blowup_time: float | None
    eps: float = 0.0
    k: float = 0.0
    chemical: str | None = None
    flux: np.ndarray | None = None

    def cdf(self, i: int):
        """The radial CDF ``r -> m(r, times[i])`` (linear in ``r^d`` between nodes: constant density)."""
        s, m = self.r**self.d, self.mass[i]
        return lambda r: np.interp(np.asarray(r, np.float64) ** self.d, s, m)

    def second_moment(self) -> np.ndarray:
        """``[S]`` :math:`m_2(t) = \\int r^2\\,dm`, exact for a constant density in every cell."""
        return np.array([_second_moment(self.r**self.d, m, self.d) for m in self.mass])

    def density_at_origin(self) -> np.ndarray:
        """``[S]`` the density :math:`\\rho(0, t)` (a probability density), from the first cell."""
        s = self.r**self.d
        return self.mass[:, 1] / (BALL[self.d] * s[1])


def _second_moment(s, q, d):
    p = 1 + 2 / d
    ds = np.diff(s)
    mean_r2 = np.diff(s**p) / (p * np.where(ds > 0, ds, 1.0))
    return float(np.sum(np.diff(q) * mean_r2))


def _check(d, chi, mu, mass, times, delta):
    if d not in (2, 3):
        raise ValueError(f"d must be 2 or 3, got {d!r}.")
    for name, v in (("chi", chi), ("mu", mu), ("mass", mass)):
        if not (isinstance(v, (int, float, np.floating)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be a finite float >= 0, got {v!r}.")
    if mu <= 0:
        raise ValueError("mu must be > 0: the reference solves the diffusive model (use the IPM with mu = 0).")
    if delta is not None and not (math.isfinite(delta) and delta > 0):
        raise ValueError(f"delta must be a positive float, or None for the unregularised model, got {delta!r}.")
    t = np.atleast_1d(np.asarray(times, np.float64))
    if t.ndim != 1 or t.size == 0 or not np.all(np.isfinite(t)) or np.any(t < 0) or np.any(np.diff(t) <= 0):
        raise ValueError(f"times must be a non-empty, strictly increasing sequence of times >= 0, got {times!r}.")
    return t


def _check_chemical(eps, k, chemical):
    for name, v in (("eps", eps), ("k", k)):
        number = isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool)
        if not (number and math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be a finite float >= 0, got {v!r}.")
    if chemical not in CHEMICAL_STARTS:
        raise ValueError(f"chemical={chemical!r} is not supported; use one of {CHEMICAL_STARTS}.")
    if eps == 0 and k > 0:
        raise ValueError(
            "the radial reference solves the screened model (k > 0) with eps > 0 only; it tends to eps = 0 like "
            "O(eps), so give a small eps."
        )
    if eps == 0 and chemical != "equilibrium":
        raise ValueError("with eps = 0 the chemical is the elliptic one at once: chemical='zero' needs eps > 0.")


def _check_grid(n_grid, r_max, blowup_density, rtol, d):
    """Refuses grid settings that would silently mean something else or give a wrong answer."""
    if n_grid is not None and (not isinstance(n_grid, (int, np.integer)) or isinstance(n_grid, bool) or n_grid < 8):
        raise ValueError(f"n_grid must be an integer >= 8 (grid cells), or None for the default, got {n_grid!r}.")
    if r_max is not None:
        if not (isinstance(r_max, (int, float, np.floating)) and math.isfinite(r_max)):
            raise ValueError(f"r_max must be a finite float, or None for the default, got {r_max!r}.")
        if r_max <= 1.0:  # the initial law fills the unit ball: an edge inside it cuts the law off
            raise ValueError(
                f"r_max must be beyond the initial unit ball (> 1; the default adds 6 diffusion lengths), "
                f"got {r_max!r}."
            )
    initial = 1.0 / BALL[d]  # the density of the uniform law on the unit ball
    if not (isinstance(blowup_density, (int, float, np.floating)) and math.isfinite(blowup_density)):
        raise ValueError(f"blowup_density must be a finite float, got {blowup_density!r}.")
    if blowup_density <= initial:
        raise ValueError(
            f"blowup_density must exceed the initial density at the origin ({initial:.4g}), got {blowup_density!r}: "
            f"a run would stop before it starts."
        )
    if not (isinstance(rtol, (int, float, np.floating)) and math.isfinite(rtol) and 0 < rtol < 1):
        raise ValueError(f"rtol must be a float in (0, 1), got {rtol!r}.")


def _bdf(rhs, y0, t, jac, rtol, events=None):
    """scipy's BDF from 0 to ``t[-1]`` with snapshots at ``t``; a run of the snapshot ``t = 0`` alone is
    the initial state itself (solve_ivp returns no state for an empty interval)."""
    if t[-1] == 0.0:
        return SimpleNamespace(t=np.zeros(1), y=np.asarray(y0, np.float64)[:, None], status=0, t_events=[np.zeros(0)])
    return solve_ivp(rhs, (0.0, t[-1]), y0, method="BDF", t_eval=t, jac=jac, rtol=rtol, atol=rtol * 1e-3, events=events)


def _default_r_max(d, mu, t_end):
    # the uniform ball spreads by diffusion (and contracts by attraction): 6 diffusion lengths
    # sqrt(2 d mu t) past r = 1 leave ~exp(-18) of the mass outside
    return 1.0 + 6.0 * math.sqrt(2 * d * mu * max(t_end, 1e-6))


# --------------------------------------------------------------------------------------------
# Unregularised: Q(s), s = r^d
# --------------------------------------------------------------------------------------------
def _s_grid(n, s_max, s_min):
    """``0`` and ``n`` nodes geometric from ~``s_min`` to ``s_max``, one of them exactly at ``s = 1``.

    The initial law's kink (the edge of the unit ball) then sits on a node, so the grid error
    converges at the method's order from ``t = 0`` on.
    """
    l1, l2 = math.log(1 / s_min), math.log(s_max)
    k = int(round(n * l1 / (l1 + l2)))
    step = l2 / (n - k)
    return np.concatenate([[0.0], np.exp(step * (np.arange(1, n + 1) - k))])


def _fd_weights(s):
    """Three-point weights of d/ds and d2/ds2 at the interior nodes of a non-uniform grid."""
    hm, hp = s[1:-1] - s[:-2], s[2:] - s[1:-1]
    den = hm * hp * (hm + hp)
    d1 = (-hp * hp / den, (hp * hp - hm * hm) / den, hm * hm / den)
    d2 = (2 * hp / den, -2 * (hp + hm) / den, 2 * hm / den)
    return d1, d2


def _solve_unregularised(t, d, chi, mu, mass, n_grid, r_max, blowup_density, rtol):
    s = _s_grid(n_grid, r_max**d, 1e-12)
    q0 = np.minimum(s, 1.0)
    (a1, b1, c1), (a2, b2, c2) = _fd_weights(s)
    diff = mu * d * d * s[1:-1] ** (2 - 2 / d)
    adv = chi * mass * d / SPHERE[d]

    def rhs(_, q):
        full = np.concatenate([[0.0], q, [1.0]])
        qm, q0_, qp = full[:-2], full[1:-1], full[2:]
        qs = a1 * qm + b1 * q0_ + c1 * qp
        qss = a2 * qm + b2 * q0_ + c2 * qp
        return diff * qss + adv * q0_ * qs

    def jac(_, q):
        full = np.concatenate([[0.0], q, [1.0]])
        qm, q0_, qp = full[:-2], full[1:-1], full[2:]
        qs = a1 * qm + b1 * q0_ + c1 * qp
        lower = (diff * a2 + adv * q0_ * a1)[1:]
        main = diff * b2 + adv * (qs + q0_ * b1)
        upper = (diff * c2 + adv * q0_ * c1)[:-1]
        return sparse.diags([lower, main, upper], [-1, 0, 1], format="csc")

    rho_scale = d / SPHERE[d]  # rho(0) = d Q_s(0) / omega_d

    def blowup(_, q):
        return math.log(rho_scale * q[0] / s[1]) - math.log(blowup_density)

    blowup.terminal = True
    blowup.direction = 1
    sol = _bdf(rhs, q0[1:-1], t, jac, rtol, events=blowup)
    if sol.status < 0:
        raise RuntimeError(f"the radial solver failed: {sol.message}")
    y = np.asarray(sol.y, np.float64).reshape(len(q0) - 2, -1).T  # [S reached, G - 1]
    q = np.concatenate([np.zeros((len(y), 1)), y, np.ones((len(y), 1))], axis=1)
    t_blow = float(sol.t_events[0][0]) if sol.t_events[0].size else None
    return RadialSolution(np.asarray(sol.t), s ** (1 / d), q, d, None, t_blow)


# --------------------------------------------------------------------------------------------
# Blob kernel: m(r) on a uniform r grid, dense field matrix
# --------------------------------------------------------------------------------------------
def shell_field(r, a, delta, d: int):
    r"""Outward radial field at radius ``r`` of a unit mass spread uniformly on the sphere of radius ``a``.

    That is :math:`\hat{x}\cdot\nabla K_\delta * \sigma_a` for the blob kernel. With
    :math:`p = \sqrt{(r-a)^2+\delta^2}`, :math:`q = \sqrt{(r+a)^2+\delta^2}`:

    * 2D: :math:`\frac{1}{4\pi r}\big[1 + (r^2 - a^2 - \delta^2) / (p q)\big]`;
    * 3D: :math:`\frac{1}{16\pi a r^2}\big[(r^2 - a^2 - \delta^2)(1/p - 1/q) + q - p\big]`.

    At :math:`\delta = 0` both give Newton's :math:`1/(\omega_d r^{d-1})` outside the shell and 0 inside.
    """
    r, a = np.asarray(r, np.float64), np.asarray(a, np.float64)
    p = np.sqrt((r - a) ** 2 + delta**2)
    q = np.sqrt((r + a) ** 2 + delta**2)
    c = r * r - a * a - delta**2
    if d == 2:
        return (1.0 + c / (p * q)) / (4 * math.pi * r)
    return (c * (1 / p - 1 / q) + q - p) / (16 * math.pi * a * r * r)


def _field_matrix(r, delta, d, n_gauss=6):
    """``F [G-1, G]``: the field at interior nodes per unit mass in each cell (constant density)."""
    x, w = np.polynomial.legendre.leggauss(n_gauss)
    lo, hi = r[:-1], r[1:]
    a = 0.5 * (hi - lo)[:, None] * x[None, :] + 0.5 * (hi + lo)[:, None]  # [G, n_gauss]
    wa = w[None, :] * a ** (d - 1)
    wa = wa / wa.sum(1, keepdims=True)  # a mass element ~ a^(d-1) da for a constant density
    ri = r[1:-1, None, None]
    return np.sum(shell_field(ri, a[None], delta, d) * wa[None], axis=-1)


def _solve_blob(t, d, chi, mu, mass, delta, n_grid, r_max, rtol):
    per_unit = math.ceil(n_grid / r_max)  # r = 1, the edge of the initial ball, is a node
    r = np.arange(math.ceil(r_max * per_unit) + 1) / per_unit
    n_grid = len(r) - 1
    s = r**d
    m0 = np.minimum(s, 1.0)
    (a1, b1, c1), (a2, b2, c2) = _fd_weights(r)
    ri = r[1:-1]
    fmat = -chi * mass * _field_matrix(r, delta, d)  # u = fmat @ diff(m)
    # diff(m) over the cells, with m_0 = 0 and m_G = 1: u = fmat @ diff(m) = fd @ m_interior + fe
    fd = fmat[:, :-1] - fmat[:, 1:]
    fe = fmat[:, -1]

    def parts(m):
        full = np.concatenate([[0.0], m, [1.0]])
        mm, m_, mp = full[:-2], full[1:-1], full[2:]
        mr = a1 * mm + b1 * m_ + c1 * mp
        mrr = a2 * mm + b2 * m_ + c2 * mp
        return mr, mrr, fd @ m + fe

    def rhs(_, m):
        mr, mrr, u = parts(m)
        return mu * (mrr - (d - 1) / ri * mr) - u * mr

    def jac(_, m):
        mr, _, u = parts(m)
        lin = sparse.diags(
            [
                (mu * (a2 - (d - 1) / ri * a1) - u * a1)[1:],
                mu * (b2 - (d - 1) / ri * b1) - u * b1,
                (mu * (c2 - (d - 1) / ri * c1) - u * c1)[:-1],
            ],
            [-1, 0, 1],
        ).toarray()
        return lin - mr[:, None] * fd

    sol = _bdf(rhs, m0[1:-1], t, jac, rtol)
    if sol.status < 0:
        raise RuntimeError(f"the radial solver failed: {sol.message}")
    m = np.concatenate([np.zeros((sol.y.shape[1], 1)), sol.y.T, np.ones((sol.y.shape[1], 1))], axis=1)
    return RadialSolution(np.asarray(sol.t), r, m, d, float(delta), None)


# --------------------------------------------------------------------------------------------
# Parabolic--parabolic (eps > 0): the enclosed mass m and the chemical's flux q on a geometric s grid
# --------------------------------------------------------------------------------------------
CHEMICAL_STARTS = ("equilibrium", "zero")


def _smoothed_mass_matrix(s, delta, d, n_mass):
    """``A [G + 1, G - 1]`` and ``b [G + 1]``: the blob-smoothed enclosed mass at every node,
    ``m_delta = A @ m[1:-1] + b``, for a density constant in ``s`` on each cell.

    By Gauss's theorem the enclosed mass of ``eta_delta * rho`` is ``omega_d r^(d-1)`` times the
    shell field (`shell_field`); cells past ``n_mass`` carry no mass worth smoothing (the law is inside
    six diffusion lengths) and keep their own mass.
    """
    r = s ** (1 / d)
    per_cell = np.zeros((len(s), len(s) - 1))
    per_cell[1:, :n_mass] = SPHERE[d] * r[1:, None] ** (d - 1) * _field_matrix_at(r[1:], r[: n_mass + 1], delta, d)
    step = np.tril(np.ones((len(s), len(s) - 1)), -1)  # unsmoothed: the cells below the node
    per_cell[:, n_mass:] = step[:, n_mass:]
    # m_delta = per_cell @ diff(m), diff(m) = D @ m[1:-1] + e_last (m_0 = 0, m_G = 1)
    a = per_cell[:, :-1] - per_cell[:, 1:]
    return a, per_cell[:, -1]


def _field_matrix_at(r_at, r_cells, delta, d, n_gauss=6):
    """`_field_matrix` at the radii ``r_at`` for the cells between the radii ``r_cells``."""
    x, w = np.polynomial.legendre.leggauss(n_gauss)
    lo, hi = r_cells[:-1], r_cells[1:]
    a = 0.5 * (hi - lo)[:, None] * x[None, :] + 0.5 * (hi + lo)[:, None]
    wa = w[None, :] * a ** (d - 1)
    wa = wa / wa.sum(1, keepdims=True)
    return np.sum(shell_field(r_at[:, None, None], a[None], delta, d) * wa[None], axis=-1)


def _solve_parabolic(t, d, chi, mu, mass, delta, eps, k, start, n_grid, r_max, blowup_density, rtol):
    s_min = 1e-12 if delta is None else (delta / 20) ** d
    s = _s_grid(n_grid, r_max**d, s_min)
    n = len(s) - 1
    m0 = np.minimum(s, 1.0)
    (a1, b1, c1), (a2, b2, c2) = _fd_weights(s)
    lap = d * d * s[1:-1] ** (2 - 2 / d)  # L f = d^2 s^(2 - 2/d) f_ss
    adv = chi * mass * d / SPHERE[d]
    tri = lambda a, b, c: sparse.diags([a[1:], b, c[:-1]], [-1, 0, 1], format="csc")
    lap_tri = tri(lap * a2, lap * b2, lap * c2)  # L on the interior nodes, Dirichlet values apart
    if delta is None:
        smooth, smooth_b = sparse.eye(n + 1, n - 1, -1, format="csc"), np.eye(n + 1)[:, -1]
    else:
        n_mass = int(np.searchsorted(s, _default_r_max(d, mu, t[-1]) ** d)) + 1
        smooth, smooth_b = _smoothed_mass_matrix(s, delta, d, min(n_mass, n))
        smooth = sparse.csc_matrix(smooth)
    # L applied to a full nodal vector f: interior rows, the neighbours of nodes 1 and n - 1 included
    lap_full = sparse.diags([lap * a2, lap * b2, lap * c2], [0, 1, 2], shape=(n - 1, n + 1), format="csc")
    lap_smooth = (lap_full @ smooth).tocsc()  # L m_delta = lap_smooth @ m + lap_full @ smooth_b
    lap_smooth_b = lap_full @ smooth_b
    m_delta_edge = float(smooth_b[-1] + (smooth @ m0[1:-1])[-1])  # the smoothed mass inside r_max
    q_far = -m_delta_edge if (k == 0 and start == "equilibrium") else 0.0
    k2 = k * k
    q_edge = np.zeros(n - 1)
    q_edge[-1] = lap[-1] * c2[-1] * q_far  # the far value's share of L q at node n - 1

    if start == "equilibrium":  # (L - k^2) q = -L m_delta: the elliptic field of the initial law
        q0 = _sparse_linalg.spsolve(
            (lap_tri - k2 * sparse.eye(n - 1)).tocsc(), -(lap_smooth @ m0[1:-1] + lap_smooth_b) - q_edge
        )
    else:
        q0 = np.zeros(n - 1)

    def rhs(_, y):
        m, q = y[: n - 1], y[n - 1 :]
        full = np.concatenate([[0.0], m, [1.0]])
        ms = a1 * full[:-2] + b1 * full[1:-1] + c1 * full[2:]
        mss = a2 * full[:-2] + b2 * full[1:-1] + c2 * full[2:]
        dm = mu * lap * mss - adv * q * ms
        dq = (lap_tri @ q + q_edge + lap_smooth @ m + lap_smooth_b - k2 * q) / eps
        return np.concatenate([dm, dq])

    def jac(_, y):
        m, q = y[: n - 1], y[n - 1 :]
        full = np.concatenate([[0.0], m, [1.0]])
        ms = a1 * full[:-2] + b1 * full[1:-1] + c1 * full[2:]
        jmm = tri(mu * lap * a2 - adv * q * a1, mu * lap * b2 - adv * q * b1, mu * lap * c2 - adv * q * c1)
        jmq = sparse.diags(-adv * ms, format="csc")
        jqq = (lap_tri - k2 * sparse.eye(n - 1)) / eps
        return sparse.bmat([[jmm, jmq], [lap_smooth / eps, jqq]], format="csc")

    rho_scale = d / SPHERE[d]

    def blowup(_, y):
        return math.log(max(rho_scale * y[0] / s[1], 1e-300)) - math.log(blowup_density)

    blowup.terminal = True
    blowup.direction = 1
    sol = _bdf(rhs, np.concatenate([m0[1:-1], q0]), t, jac, rtol, events=blowup)
    if sol.status < 0:
        raise RuntimeError(f"the radial solver failed: {sol.message}")
    y = np.asarray(sol.y, np.float64).reshape(2 * (n - 1), -1).T
    ones, zeros = np.ones((len(y), 1)), np.zeros((len(y), 1))
    m = np.concatenate([zeros, y[:, : n - 1], ones], axis=1)
    q = np.concatenate([zeros, y[:, n - 1 :], np.full((len(y), 1), q_far)], axis=1)
    t_blow = float(sol.t_events[0][0]) if sol.t_events[0].size else None
    return RadialSolution(
        np.asarray(sol.t), s ** (1 / d), m, d, None if delta is None else float(delta), t_blow, eps, k, start, q
    )


def solve_radial(
    times,
    *,
    d: int = 2,
    chi: float = 1.0,
    mu: float = 1.0,
    mass: float = 16 * math.pi,
    delta: float | None = None,
    eps: float = 0.0,
    k: float = 0.0,
    chemical: str = "equilibrium",
    n_grid: int | None = None,
    r_max: float | None = None,
    blowup_density: float = 1e8,
    rtol: float = 1e-7,
) -> RadialSolution:
    """Solves the radial, flow-free model from the uniform law on the unit ball (the paper's).

    With ``eps > 0`` the parabolic--parabolic model (SPEC section 5): the chemical has its own time
    scale, ``eps c_t = Lap c - k^2 c + M rho``, and the state is the enclosed mass ``m`` and the
    chemical's flux ``q`` on a grid geometric in ``s = r^d`` (docs/reference.md), both returned.

    Args:
      times: increasing snapshot times.
      d: 2 or 3.
      chi: chemotactic sensitivity.
      mu: diffusivity (``> 0``).
      mass: total mass ``M``.
      delta: ``None`` for the Keller--Segel model itself, or the blob kernel's regularisation length
        (the experiments' kernel; `ksdp.ipm.DEFAULT_DELTA` is the paper's).
      eps: the chemical's time scale (``0``: the elliptic model, ``c = -K * rho``).
      k: the chemical's decay rate (``eps > 0`` only).
      chemical: where the chemical starts for ``eps > 0``: ``"equilibrium"`` (the elliptic field of
        the initial law, so that ``eps -> 0`` has no initial layer) or ``"zero"``.
      n_grid: grid cells (default 1500 geometric cells in ``s = r^d`` unregularised; cells of
        ``delta / 5`` for the blob, at least 400; with ``eps > 0``, 1500 geometric cells, 600 for the blob,
        whose smoothing couples every pair of cells).
      r_max: outer radius (default: 6 diffusion lengths beyond the unit ball at the last time, the
        chemical's ``sqrt(t / eps)`` among them).
      blowup_density: the unregularised run stops when the density at the origin passes this
        (the initial one is ``1 / |B_1|``); the time is `RadialSolution.blowup_time`, and only the
        snapshots before it are returned.
      rtol: relative tolerance of the BDF integrator.

    Returns:
      `RadialSolution`.
    """
    t = _check(d, chi, mu, mass, times, delta)
    _check_grid(n_grid, r_max, blowup_density, rtol, d)
    _check_chemical(eps, k, chemical)
    if eps > 0:
        reach = max(mu, 1.0 / eps)  # the chemical diffuses with 1 / eps
        r_max = float(r_max or _default_r_max(d, reach, t[-1]) + (10.0 / k if k > 0 else 0.0))
        n_grid = int(n_grid or (1500 if delta is None else 600))
        return _solve_parabolic(t, d, chi, mu, mass, delta, eps, k, chemical, n_grid, r_max, blowup_density, rtol)
    r_max = float(r_max or _default_r_max(d, mu, t[-1]))
    if delta is None:
        return _solve_unregularised(t, d, chi, mu, mass, int(n_grid or 1500), r_max, blowup_density, rtol)
    n_grid = int(n_grid or max(400, math.ceil(r_max / (delta / 5))))
    return _solve_blob(t, d, chi, mu, mass, delta, n_grid, r_max, rtol)


def blowup_time(
    *,
    d: int = 2,
    chi: float = 1.0,
    mu: float = 1.0,
    mass: float = 16 * math.pi,
    eps: float = 0.0,
    k: float = 0.0,
    t_max: float = 1.0,
    n_grid: int = 1500,
    blowup_density: float = 1e8,
) -> float | None:
    """The time the density at the origin of the unregularised model passes ``blowup_density``.

    From the uniform law on the unit ball; ``None`` if it does not happen before ``t_max``. For the
    uniform core the density grows like ``rho_0 / (1 - chi M rho_0 t)``, so the time at density
    ``1e8`` is within ``1e-8`` relative of the blow-up time itself.
    """
    sol = solve_radial(
        (t_max,), d=d, chi=chi, mu=mu, mass=mass, eps=eps, k=k, n_grid=n_grid, blowup_density=blowup_density
    )
    return sol.blowup_time
