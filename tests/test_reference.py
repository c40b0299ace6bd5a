"""ksdp.reference against its identities: the exact second-moment slope, pure diffusion, the
pressureless collapse of the uniform core, grid convergence, and delta -> 0.

Grid tolerances are Richardson's: for a method converging at order p >= 1, the error of the solution
on n cells is |u_n - u_2n| 2^p / (2^p - 1) <= 2 |u_n - u_2n|, so |u_n - exact| <= 2 |u_n - u_2n| is
what a correct solver satisfies and a wrong equation fails (its error does not shrink with the grid).
"""

import math

import numpy as np
import pytest

from ksdp import reference as R


def test_second_moment_identity_2d():
    # unregularised 2D model, mu = chi = 1, M = 16 pi: d m2 / dt = 2 d mu - chi M / (2 pi) = -4
    # (the J -> infinity limit of the IPM's -4 + 8/J), up to the blow-up time
    t = np.array([0.02, 0.04, 0.06])
    exact = 0.5 - 4 * t
    a = R.solve_radial(t, n_grid=1500).second_moment()
    b = R.solve_radial(t, n_grid=3000).second_moment()
    assert np.all(np.abs(a - exact) <= 2 * np.abs(a - b) + 1e-12), (a - exact, a - b)
    assert np.max(np.abs(b - exact)) < 1e-4  # and the finer grid is close indeed


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("delta", [None, pytest.param(0.05, marks=pytest.mark.slow)])
def test_pure_diffusion(d, delta):
    # chi = 0: m2(t) = m2(0) + 2 d mu t, m2(0) = d / (d + 2) for the uniform ball
    t = np.array([0.01, 0.05])
    exact = d / (d + 2) + 2 * d * t
    n = 400 if delta else 800
    a = R.solve_radial(t, d=d, chi=0.0, delta=delta, n_grid=n).second_moment()
    b = R.solve_radial(t, d=d, chi=0.0, delta=delta, n_grid=2 * n).second_moment()
    assert np.all(np.abs(a - exact) <= 2 * np.abs(a - b) + 1e-9), (a - exact, a - b)


@pytest.mark.parametrize("d", [2, 3])
def test_uniform_core_collapses_like_dust_without_diffusion(d):
    # mu -> 0: the uniform core's density obeys rho' = chi M rho^2, so rho(0) blows up at
    # T = 1 / (chi M rho_0) = |B_1| / (16 pi): 1/16 in 2D, 1/12 in 3D. With mu = 1e-3 the diffusive
    # edge layer (width sqrt(mu T) ~ 0.008) stays away from the centre; the stopping density 1e8
    # moves the time by 1e-8 relative, the integrator's rtol by ~1e-7: 1e-4 covers both.
    t_dust = R.BALL[d] / (16 * math.pi)
    assert R.blowup_time(d=d, mu=1e-3, t_max=0.2) == pytest.approx(t_dust, rel=1e-4)


def test_blowup_time_of_the_paper_case_converges_before_the_virial_bound():
    # 2D, mu = chi = 1, M = 16 pi: diffusion at the core's edge delays the collapse past the dust
    # time 1/16, and it must come before the virial bound 0.125 (m2 = 1/2 - 4t reaches 0)
    times = [R.blowup_time(n_grid=n, t_max=0.2) for n in (750, 1500, 3000)]
    assert abs(times[2] - times[1]) < abs(times[1] - times[0]) / 2  # converging with the grid
    assert 1 / 16 < times[2] < 0.125
    assert times[2] == pytest.approx(0.0960, abs=2e-4)  # the value docs/reference.md quotes


@pytest.mark.slow
def test_blob_reference_tends_to_the_model_as_delta_shrinks():
    # the blob's regularisation error on m2 shrinks with delta^2 (times a log): measured 6x per
    # decade of delta^2; a wrong field (a missing shell, a factor) would not converge at all
    t = np.array([0.03, 0.06])
    exact = R.solve_radial(t).second_moment()
    errs = [np.abs(R.solve_radial(t, delta=math.sqrt(d2)).second_moment() - exact).max() for d2 in (1e-2, 1e-3, 1e-4)]
    assert errs[1] < errs[0] / 4 and errs[2] < errs[1] / 4, errs


@pytest.mark.slow
def test_blob_solution_is_a_cdf_past_the_blowup():
    sol = R.solve_radial((0.05, 0.1), delta=math.sqrt(1e-3))
    assert sol.times.tolist() == [0.05, 0.1] and sol.blowup_time is None
    assert np.all(np.diff(sol.mass, axis=1) >= -1e-9)  # a density >= 0 (integrator tolerance)
    assert np.all((sol.mass >= -1e-9) & (sol.mass <= 1 + 1e-9))
    # past the delta = 0 blow-up (t = 0.096) the blob holds a core of size ~delta: half the mass
    # (the critical 8 pi of 16 pi) within a few delta
    assert sol.cdf(1)(5 * math.sqrt(1e-3)) > 0.4


def test_unregularised_run_stops_at_blowup():
    sol = R.solve_radial((0.05, 0.09, 0.11))
    assert sol.blowup_time is not None and 0.09 < sol.blowup_time < 0.11
    assert sol.times.tolist() == [0.05, 0.09]  # no snapshot past the blow-up


@pytest.mark.parametrize("d", [2, 3])
def test_shell_field_against_quadrature(d):
    # the closed form against the field of the shell averaged by brute force over the sphere
    r, a, delta = 0.7, 0.5, 0.1
    if d == 2:
        th = (np.arange(200000) + 0.5) * 2 * math.pi / 200000
        z = np.stack([r - a * np.cos(th), -a * np.sin(th)], -1)
        f = np.mean(z[:, 0] / (2 * math.pi * (np.sum(z * z, -1) + delta**2)))
    else:
        u = (np.arange(200000) + 0.5) * 2 / 200000 - 1  # cos(angle), uniform on the sphere
        zx, zr2 = r - a * u, r * r + a * a - 2 * a * r * u
        f = np.mean(zx / (4 * math.pi * (zr2 + delta**2) ** 1.5))
    assert R.shell_field(r, a, delta, d) == pytest.approx(f, rel=1e-6)
    # delta = 0: Newton's theorem, 1 / (omega_d r^(d-1)) outside the shell, 0 inside
    assert R.shell_field(r, a, 0.0, d) == pytest.approx(1 / (R.SPHERE[d] * r ** (d - 1)))
    assert abs(R.shell_field(0.3, a, 0.0, d)) < 1e-12


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"d": 4}, "d must be 2 or 3"),
        ({"mu": 0.0}, "mu must be > 0"),
        ({"chi": float("nan")}, "chi must be"),
        ({"delta": -1.0}, "delta must be"),
        ({"times": (0.02, 0.01)}, "strictly increasing"),
        # settings that would mean something else silently: 0 as the default grid, an edge inside
        # the initial ball, a blow-up threshold that is NaN or already passed at t = 0
        ({"n_grid": 0}, "n_grid must be"),
        ({"n_grid": True}, "n_grid must be"),
        ({"r_max": 0.8}, "r_max must be beyond"),
        ({"blowup_density": float("nan")}, "blowup_density must be a finite"),
        ({"blowup_density": 0.2}, "blowup_density must exceed"),
        ({"rtol": 0.0}, "rtol must be"),
    ],
)
def test_bad_input(kwargs, match):
    kwargs = {"times": (0.01,), **kwargs}
    with pytest.raises(ValueError, match=match):
        R.solve_radial(**kwargs)


@pytest.mark.parametrize("delta", [None, 0.03])
def test_the_initial_snapshot_alone_is_the_initial_law(delta):
    # t = 0 only: the uniform ball itself, m2 = d / (d + 2) exactly (the solver is not run)
    sol = R.solve_radial((0.0,), delta=delta)
    assert sol.times.tolist() == [0.0]
    assert sol.second_moment() == pytest.approx([0.5], rel=1e-3)  # the grid's quadrature of r^2
