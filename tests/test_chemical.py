"""The parabolic--parabolic system (eps > 0) and the screened kernel (k > 0): `ksdp.chemical`, the
screened kernels, their radial reference, and the IPM against it.

Pathwise tests run two simulations from the same key (the same initial cloud and the same noise), so
their difference is the model's difference alone, with no sampling noise to tell apart from it.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

import ksdp
from ksdp import chemical, kernels
from ksdp import reference as R

KEY = jax.random.key(3)
SMALL = dict(times=(0.02,), n_particles=1000)


def _rms(a, b):
    return float(jnp.sqrt(jnp.mean(jnp.sum((a - b) ** 2, axis=-1))))


@pytest.fixture(scope="module")
def elliptic():
    return ksdp.simulate(KEY, ksdp.Params(), **SMALL).particles[-1]


def test_eps_and_k_zero_are_todays_model_bit_for_bit(elliptic):
    # concrete zeros run today's program, bit for bit; traced zeros run the field and the screened kernel,
    # whose lag is exactly zero at eps = 0 and whose kernel is exactly the blob's at k = 0 (x K_1(x) = 1 at
    # 0): the same law, in another compiled program, so equal to XLA's rounding: 200 steps of at most
    # 1 ulp of |x| each (bit for bit under XLA's default optimisations, which compile both sums alike)
    same = ksdp.simulate(KEY, ksdp.Params(eps=0.0, k=0.0), **SMALL)
    assert same.field_reach is None
    assert bool(jnp.all(same.particles[-1] == elliptic))
    traced = jax.jit(lambda e, k: ksdp.simulate(KEY, ksdp.Params(eps=e, k=k), check=False, **SMALL).particles[-1])
    atol = 200 * 2**-23 * float(jnp.max(jnp.abs(elliptic)))
    np.testing.assert_allclose(traced(0.0, 0.0), elliptic, rtol=0, atol=atol)


@pytest.mark.slow
def test_small_eps_tends_to_the_elliptic_model_like_eps(elliptic):
    # the chemical's lag is O(eps): from the same key, the distance to the elliptic run falls ~10x per
    # decade of eps (measured 4.3x from 0.1 to 0.01, where O(eps^2) still shows, then 8x); a lag that
    # did not vanish, or a field with the wrong sign or scale, would not shrink like this
    dist = [
        _rms(ksdp.simulate(KEY, ksdp.Params(eps=e), field_grid=1024, **SMALL).particles[-1], elliptic)
        for e in (1e-2, 1e-3)
    ]
    assert dist[1] < dist[0] / 5, dist
    assert dist[0] < 0.01  # against the cloud's rms radius of ~0.6


@pytest.mark.slow
def test_small_k_tends_to_the_newtonian_kernel_like_k_squared(elliptic):
    # the screened kernel differs from the Newtonian one by O(k^2 log k) at distances ~1
    traced = jax.jit(lambda k: ksdp.simulate(KEY, ksdp.Params(k=k), check=False, **SMALL).particles[-1])
    dist = [_rms(traced(k), elliptic) for k in (0.1, 0.01)]
    assert dist[1] < dist[0] / 20, dist


@pytest.mark.parametrize("d", [2, 3])
def test_screened_gradient_is_the_gradient_of_its_potential(d):
    # float64: the hand-written factor against jax.grad of the potential (-K_0 or -e^{-kr}/r over 4 pi)
    with jax.enable_x64(True):
        z = jnp.array([0.3, -0.2, 0.1][:d], jnp.float64)
        for kernel in ("blob", "exact"):
            g = jax.grad(lambda z, kernel=kernel: kernels.potential(z, 0.05, kernel, k=1.7))(z)
            # A&S polynomials: relative error below 2.2e-7 in K_0 and K_1, so 1e-6 of the gradient
            np.testing.assert_allclose(kernels.grad_kernel(z, 0.05, kernel, k=1.7), g, rtol=1e-6)


def test_bessel_forms_against_scipy():
    x = np.array([1e-6, 0.01, 0.5, 1.99, 2.0, 2.01, 5.0, 30.0])
    with jax.enable_x64(True):
        # A&S 9.8.5-8 state relative errors below 1.9e-7 (K_0) and 2.2e-7 (x K_1)
        np.testing.assert_allclose(kernels.x_k1(jnp.asarray(x)), x * special.k1(x), rtol=2.2e-7)
        np.testing.assert_allclose(kernels.bessel_k0(jnp.asarray(x)), special.k0(x), rtol=2e-7)
    assert float(kernels.x_k1(jnp.float32(0.0))) == 1.0


def test_fourier_blob_is_the_transform_of_the_screened_blob():
    # 2D Hankel transform of K_0(k r_delta) / (2 pi) by quadrature, against f(delta s) / s^2
    from scipy import integrate

    k, delta = 1.5, 0.3
    for xi in (0.5, 2.0, 5.0):
        num = integrate.quad(
            lambda r, xi=xi: special.k0(k * math.hypot(r, delta)) * special.j0(xi * r) * r, 0, 60, limit=2000
        )[0]
        with jax.enable_x64(True):
            pred = float(kernels.fourier_blob(jnp.float64(xi * xi + k * k), delta))
        assert pred == pytest.approx(num, rel=1e-6)  # the polynomial's 2.2e-7 and quad's own error


@pytest.mark.slow
def test_pure_diffusion_and_a_centred_cloud_with_a_field():
    # chi = 0: the field exerts nothing, m2(t) - m2(0) averages 2 d mu t; standard error from the
    # particles' own increments (|x_t|^2 - |x_0|^2 per particle), 4 SE
    t = 0.02
    traj = ksdp.simulate(KEY, ksdp.Params(chi=0.0, eps=0.1), times=(0.0, t), n_particles=1000)
    x0, x1 = (np.asarray(traj.particles[i], np.float64) for i in (0, 1))
    inc = np.sum(x1**2, -1) - np.sum(x0**2, -1)
    assert abs(inc.mean() - 4 * t) < 4 * inc.std() / math.sqrt(len(inc))
    # chi = 1, eps = 1: a radial law keeps its centre at the origin; the centre of J points of the
    # uniform ball spreads by sqrt(1/(2+d) / J) per axis, the noise adds sqrt(2 mu t / J): 5 SE
    traj = ksdp.simulate(KEY, ksdp.Params(eps=1.0), times=(t,), n_particles=1000)
    centre = np.asarray(jnp.mean(traj.particles[-1], axis=0))
    assert np.all(np.abs(centre) < 5 * math.sqrt((0.25 + 2 * t) / 1000)), centre
    assert 0 < float(traj.field_reach) <= 1


@pytest.mark.slow
def test_a_batch_over_eps_is_each_run_alone():
    eps = jnp.array([0.1, 1.0])
    keys = jax.random.split(KEY, 2)
    batch = ksdp.sweep(keys, ksdp.Params(eps=eps), times=(0.005,), n_particles=256)
    one = ksdp.simulate(keys[1], ksdp.Params(eps=1.0), times=(0.005,), n_particles=256)
    # vmap over the sets changes XLA's fusion: float32 round-off of the positions (|x| ~ 1)
    np.testing.assert_allclose(batch.particles[1], one.particles, atol=1e-5)
    assert batch.field_reach.shape == (2,)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(params=ksdp.Params(eps=-1.0)), "params.eps"),
        (dict(params=ksdp.Params(k=-1.0)), "params.k"),
        (dict(params=ksdp.Params(eps=float("nan"))), "params.eps"),
        (dict(params=ksdp.Params(eps=0.1), chemical="hot"), "chemical="),
        (dict(params=ksdp.Params(), chemical="zero"), "needs params.eps > 0"),
        (dict(params=ksdp.Params(eps=0.1), field_grid=4), "field_grid"),
        (dict(params=ksdp.Params(eps=1e-5)), "field grid of 512"),
        (dict(params=ksdp.Params(eps=0.1), kernel="paper"), "kernel='blob'"),
        (dict(params=ksdp.Params(k=1.0), kernel="paper"), "screened kernel"),
    ],
)
def test_bad_input_is_refused(kwargs, match):
    params = kwargs.pop("params")
    with pytest.raises(ValueError, match=match):
        ksdp.simulate(KEY, params, times=(0.01,), n_particles=64, **kwargs)


def test_a_box_too_small_for_the_reach_is_refused():
    # a cloud that a strong flow carries out of its box: the run says so instead of wrapping around
    x0 = 0.1 * ksdp.uniform_ball(KEY, 64, 2)
    with pytest.raises(ksdp.NonFiniteError, match="field grid was too small"):
        ksdp.simulate(KEY, ksdp.Params(eps=1.0, flow=200.0, mu=0.0), times=(0.01,), x0=x0, flow="laminar2d")


# --------------------------------------------------------------------------------------------
# The radial reference
# --------------------------------------------------------------------------------------------
def test_radial_reference_tends_to_the_elliptic_one_like_eps():
    # sup-distance of the radial CDFs at t = 0.075 (2D, M = 16 pi): ~10x per decade of eps (SPEC
    # section 5 measured 2e-2, 2e-3, 2e-4); the grid's own error is ~1e-4, hence the last bound
    t = np.array([0.075])
    r = np.linspace(0, 3, 3001)
    elliptic = R.solve_radial(t).cdf(0)(r)
    dist = [np.max(np.abs(R.solve_radial(t, eps=e).cdf(0)(r) - elliptic)) for e in (1e-2, 1e-3, 1e-4)]
    assert 1.5e-2 < dist[0] < 3e-2 and dist[1] < dist[0] / 7 and dist[2] < 3e-4, dist


def test_radial_blowup_moves_later_as_eps_grows():
    # SPEC section 5: about 0.097 (eps = 0.01), 0.111 (0.1), 0.19 (1), against 0.0960 at eps = 0;
    # the grid converges to ~1e-4 in the blow-up time (test_reference), so 2e-3 holds them to SPEC's digits
    times = [R.blowup_time(eps=e, t_max=0.4) for e in (0.01, 0.1, 1.0)]
    assert times == pytest.approx([0.0975, 0.1110, 0.1890], abs=2e-3), times
    assert R.blowup_time(t_max=0.4) < times[0] < times[1] < times[2]


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("start", ["equilibrium", "zero"])
def test_radial_reference_pure_diffusion(d, start):
    # chi = 0: m2(t) = m2(0) + 2 d mu t whatever the chemical does; Richardson as in test_reference
    t = np.array([0.01, 0.05])
    exact = d / (d + 2) + 2 * d * t
    a = R.solve_radial(t, d=d, chi=0.0, eps=0.1, chemical=start, n_grid=800).second_moment()
    b = R.solve_radial(t, d=d, chi=0.0, eps=0.1, chemical=start, n_grid=1600).second_moment()
    assert np.all(np.abs(a - exact) <= 2 * np.abs(a - b) + 1e-9), (a - exact, a - b)


def test_radial_reference_flux_is_the_enclosed_mass_at_equilibrium():
    # at t = 0 with the equilibrium start and k = 0, q = -m exactly (Gauss); with k > 0 the flux is
    # smaller in size (screened) and vanishes far away
    sol = R.solve_radial((0.0, 0.01), eps=0.1)
    np.testing.assert_allclose(sol.flux[0], -sol.mass[0], atol=1e-12)
    screened = R.solve_radial((0.0,), eps=0.1, k=2.0)
    assert np.all(screened.flux[0] >= -screened.mass[0] - 1e-12) and abs(screened.flux[0][-1]) < 1e-8


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(eps=-0.1), "eps"),
        (dict(k=1.0), "eps > 0 only"),
        (dict(eps=0.1, chemical="hot"), "chemical="),
        (dict(chemical="zero"), "needs eps > 0"),
        (dict(eps=True), "eps"),
    ],
)
def test_radial_reference_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        R.solve_radial((0.01,), **kwargs)


# --------------------------------------------------------------------------------------------
# The IPM against the radial reference
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    "n, eps, k, start",
    [
        (100_000, 0.1, 0.0, "equilibrium"),
        (100_000, 1.0, 0.0, "equilibrium"),
        (100_000, 0.1, 2.0, "equilibrium"),
        (10_000, 1.0, 0.0, "zero"),
    ],
)
def test_ipm_matches_the_radial_reference(n, eps, k, start):
    # 2D, the particle mesh, blob reference with the IPM's delta, t = 0.025 and 0.05 (before the blow-up):
    # the radial KS distance stays under the 99% point of n independent draws, 1.63 / sqrt(n) (at J = 10^5:
    # 0.0052, which the elliptic IPM itself meets, 0.0050 at t = 0.05). The same run against the elliptic
    # reference must exceed 3 / sqrt(n): the check has the power to see the chemical's lag (measured at
    # J = 10^5: 0.02-0.27 away).
    times = (0.025, 0.05)
    delta = ksdp.ipm.DEFAULT_DELTA
    traj = ksdp.simulate(jax.random.key(1), ksdp.Params(eps=eps, k=k), times=times, n_particles=n, chemical=start)
    ref = R.solve_radial(np.array(times), delta=delta, eps=eps, k=k, chemical=start)
    wrong = R.solve_radial(np.array(times), delta=delta)
    clouds = np.asarray(traj.particles, np.float64)
    ks = [ksdp.metrics.radial_ks(clouds[i], ref.cdf(i)) for i in range(2)]
    assert max(ks) < 1.63 / math.sqrt(n), ks
    assert ksdp.metrics.radial_ks(clouds[1], wrong.cdf(1)) > 3 / math.sqrt(n)


def test_field_box_and_cells():
    # the box holds the cloud (1.5 its half-extent), its spread and the chemical's reach REACH sqrt(T / eps)
    assert float(chemical.half_width(1.0, 0.1, 0.0, 0.1, 2)) == pytest.approx(1.5 + chemical.REACH)
    assert float(chemical.half_width(1.0, 0.0, 0.0, 0.1, 2)) == pytest.approx(1.5)
    assert chemical.cell_ratio(1.0, 0.1, 1.0, 0.03, 0.1, 512, 2) < chemical.SPACING_LIMIT


@pytest.mark.slow
@pytest.mark.parametrize("d, cutoff", [(2, None), (2, 5.0), (3, 5.0)])
def test_screened_kernel_on_the_mesh_matches_the_direct_sum(d, cutoff):
    # PM (2D) and P3M (2D, 3D) carry the screened kernel as they carry the blob: the mesh's error is set by
    # its cells and the near field's cutoff, not by the screening, so its L2 error stays below the 1e-3 (PM,
    # cells below delta) and 2e-3 (P3M at 5 cells) of the *unscreened* field they reach for that one (the
    # screened field is 2.7-4x smaller here, so its relative error is that much larger)
    x = ksdp.uniform_ball(jax.random.key(1), 3000, d)
    delta, k = 0.05, 3.0
    exact, plain = ksdp.pair_sum(x, x, delta, k=k), ksdp.pair_sum(x, x, delta)
    fast = ksdp.particle_mesh.pair_sum(x, x, delta, grid=128 if d == 2 else 48, cutoff=cutoff, k=k)
    err = float(jnp.linalg.norm(fast - exact) / jnp.linalg.norm(plain))
    assert err < (1e-3 if cutoff is None else 2e-3), err
    # and the screening is there: the unscreened sum differs by far more than that
    assert float(jnp.linalg.norm(plain - exact) / jnp.linalg.norm(exact)) > 0.1


@pytest.mark.slow
@pytest.mark.parametrize("eps, k, start", [(0.1, 0.0, "zero"), (1.0, 0.0, "zero"), (0.1, 5.0, "equilibrium")])
def test_ipm_matches_the_radial_reference_in_3d(eps, k, start):
    # 3D, J = 4000 (the direct drift), field grid of 80^3 (cells of 2.5 and 3.5 delta). The chemical starting
    # from zero (in 3D the equilibrium start's lag moves the law by less than J = 4000 can see before
    # t = 0.05: 0.019 at eps = 1), and the screened kernel (k = 5) from equilibrium. The same 99% point of
    # the radial KS as in 2D, and the power check: against the elliptic reference (0.07-0.16 away in the
    # reference itself), or for k > 0 against the unscreened one of the same eps and start (0.16 away at
    # t = 0.05), so the screening is what the run must get right.
    n, times = 4000, (0.025, 0.05)
    delta = ksdp.ipm.DEFAULT_DELTA
    traj = ksdp.simulate(
        jax.random.key(1), ksdp.Params(eps=eps, k=k), times=times, n_particles=n, d=3, chemical=start, field_grid=80
    )
    ref = R.solve_radial(np.array(times), d=3, delta=delta, eps=eps, k=k, chemical=start)
    if k > 0:
        wrong = R.solve_radial(np.array(times), d=3, delta=delta, eps=eps, chemical=start)
    else:
        wrong = R.solve_radial(np.array(times), d=3, delta=delta)
    clouds = np.asarray(traj.particles, np.float64)
    ks = [ksdp.metrics.radial_ks(clouds[i], ref.cdf(i)) for i in range(2)]
    assert max(ks) < 1.63 / math.sqrt(n), ks
    assert ksdp.metrics.radial_ks(clouds[1], wrong.cdf(1)) > 3 / math.sqrt(n)
