"""The IPM against exact identities (SPEC section 2), a dense float64 reference, and bad input."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from compiles import compilations

import ksdp
from ksdp import drifts, ipm

DT = 1e-4
TIMES = np.round(np.arange(0, 21) * 1e-3, 6)  # 21 snapshots on [0, 0.02]


def _slopes(traj):
    """Least-squares slope of m2(t) - m2(0) for each run; traj.particles is [P, S, J, d]."""
    m2 = np.asarray(ipm.second_moment(traj.particles), np.float64)  # [P, S]
    t = np.asarray(traj.times, np.float64)
    tc = t - t.mean()
    return ((m2 - m2.mean(axis=1, keepdims=True)) @ tc) / (tc @ tc)


def test_second_moment_identity_deterministic():
    # mu = 0: d m2/dt = -chi M (J-1)/(2 pi J) holds path by path up to the Euler and regularisation
    # errors. The unregularised kernel is no good here: random close pairs (r < 2 c dt / r, c = 8/J)
    # overshoot each other under Euler and add dt*|V|^2 ~ 4% to the slope. The blob kernel with
    # delta = 0.01 caps the pair speed at c/(2 delta), so the Euler error is ~dt * 64 m2 ~ 0.1%,
    # and its bias on the pair sum is the mean of delta^2/(r^2+delta^2) over pairs,
    # ~ delta^2 ln(4/delta^2) ~ 0.1%. The 1% covers both and fails for any wrong prefactor.
    n = 1000
    params = ksdp.Params(chi=1.0, mu=0.0, mass=16 * math.pi, delta=0.01)
    traj = ksdp.sweep(jax.random.key(0), params, TIMES, n_particles=n, kernel="blob", dt=DT)
    slope = _slopes(traj)[0]
    expected = -16 * math.pi * (n - 1) / (2 * math.pi * n)
    assert abs(slope - expected) < 0.01 * abs(expected), (slope, expected)


@pytest.mark.slow
def test_second_moment_identity_stochastic():
    # mu = 1: E[slope] = 2 d mu - chi M (J-1)/(2 pi J) = -4 + 8/J. One path's slope fluctuates by
    # ~0.3 at J = 2000 (m2 noise ~0.007 over t = 0.02), so average 16 vmapped keys and compare
    # within 3 standard errors of the mean. Blob kernel with delta^2 = 1e-6: its bias on the pair
    # sum is ~delta^2 ln(1/delta^2) ~ 1e-5 relative, far below the standard error (~2%).
    n, runs = 2000, 16
    params = ksdp.Params(mu=jnp.ones(runs), delta=1e-3)
    # check=False: at delta = 1e-3, far below the particle spacing, close pairs kick each other by more
    # than delta in one step (the health check flags that); the identity holds whatever the kicks
    # (the pair sum is antisymmetric), and it is the identity this test reads
    traj = ksdp.sweep(jax.random.key(1), params, TIMES, n_particles=n, kernel="blob", dt=DT, check=False)
    assert np.all(np.asarray(traj.nonfinite_step) == -1)
    s = _slopes(traj)
    se = s.std(ddof=1) / math.sqrt(runs)
    expected = -4 + 8 / n
    assert abs(s.mean() - expected) < 3 * se, (s.mean(), expected, se)
    assert se < 0.1 * abs(expected)  # the test has power: the SE is small against the slope


@pytest.mark.slow
@pytest.mark.parametrize("d", [2, 3])
def test_pure_diffusion(d):
    # chi = 0: E m2(t) = m2(0) + 2 d mu t. The increment per run has sd ~ sqrt(8 m2 mu t / J)
    # (plus the |W|^2 term); compare the mean over 8 runs within 3 standard errors.
    n, runs, t_end = 2000, 8, 0.02
    params = ksdp.Params(chi=0.0, mu=jnp.full(runs, 1.0))
    traj = ksdp.sweep(jax.random.key(2 + d), params, (0.0, t_end), n_particles=n, d=d, dt=DT)
    m2 = np.asarray(ipm.second_moment(traj.particles), np.float64)
    inc = m2[:, 1] - m2[:, 0]
    se = inc.std(ddof=1) / math.sqrt(runs)
    assert abs(inc.mean() - 2 * d * t_end) < 3 * se, (inc.mean(), 2 * d * t_end, se)
    assert se < 0.1 * 2 * d * t_end


def _dense_drift64(x, delta, kernel):
    x = np.asarray(x, np.float64)
    d = x.shape[1]
    z = x[:, None, :] - x[None, :, :]
    r2 = (z**2).sum(-1)
    off = ~np.eye(len(x), dtype=bool)
    s = np.where(off, r2, 1.0)
    dl2 = delta**2
    if d == 2:
        phi = {
            "exact": 1 / (2 * np.pi * s),
            "blob": 1 / (2 * np.pi * (s + dl2)),
            "paper": (1 / (s + dl2) + dl2 * np.log(s) / (s + dl2) ** 2) / (2 * np.pi),
        }[kernel]
    else:
        r = np.sqrt(s)
        phi = {
            "exact": 1 / (4 * np.pi * r**3),
            "blob": 1 / (4 * np.pi * (s + dl2) ** 1.5),
            "paper": (s - dl2) / (4 * np.pi * r * (s + dl2) ** 2),
        }[kernel]
    return (z * np.where(off, phi, 0.0)[..., None]).sum(1)


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("kernel", ["exact", "paper", "blob"])
def test_tiled_drift_matches_dense_float64(d, kernel):
    # 777 particles with tile 64: 13 tiles, the last one padded. Float32 sums of ~800 terms of mixed
    # sign: relative error ~sqrt(800) * 6e-8 ~ 2e-6 in norm, under the 1e-5.
    x = ksdp.uniform_ball(jax.random.key(d), 777, d)
    got = np.asarray(drifts.pair_sum(x, x, 0.03, kernel=kernel, tile=64), np.float64)
    ref = _dense_drift64(x, 0.03, kernel)
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-5


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU's tile rule")
def test_default_tile_holds_about_the_same_pairs_whatever_j_and_the_batch():
    # a tile's pairs over the batch's sets within a factor sqrt(2) of CPU_TILE_PAIRS (the nearest power of
    # two), between the bounds 8 and 256: 256 targets at J = 2000 alone, 32 in a batch of nine
    assert drifts.default_tile(2000) == 256 and drifts.default_tile(2000, 9) == 32
    for j, p in [(2000, 2), (8000, 1), (20000, 1), (2000, 6)]:
        pairs = drifts.default_tile(j, p) * j * p
        assert drifts.CPU_TILE_PAIRS / 2**0.5 <= pairs <= drifts.CPU_TILE_PAIRS * 2**0.5, (j, p)
    assert drifts.default_tile(10**5) == 8 and drifts.default_tile(100) == 256
    assert drifts.default_tile() == 32  # no size given: the former fixed tile


@pytest.mark.slow
def test_vmap_over_amplitudes_equals_separate_runs_and_compiles_once(caplog):
    amps = jnp.array([1.0, 10.0, 30.0, 100.0])
    kw = dict(times=(0.001, 0.002), n_particles=300, flow="laminar2d", dt=DT)
    with compilations(caplog) as compiled:
        batch = ksdp.sweep(jax.random.key(7), ksdp.Params(flow=amps), **kw)
        keys = jax.random.split(jax.random.key(7), 4)
        singles = [ksdp.simulate(keys[i], ksdp.Params(flow=amps[i]), **kw) for i in range(4)]
    # one program for the batch, one for the four single runs: the amplitudes are traced
    assert sum(name.startswith("jit(run_batched)") for name in compiled) == 1, compiled
    assert sum(name.startswith("jit(run)") for name in compiled) == 1, compiled
    for i in range(4):
        # same arithmetic, possibly fused differently under vmap: float32 round-off over 20 steps,
        # positions O(1): 1e-5 absolute.
        np.testing.assert_allclose(batch.particles[i], singles[i].particles, atol=1e-5, rtol=0)
    # the amplitude matters: the runs differ from each other
    assert float(jnp.max(jnp.abs(batch.particles[0] - batch.particles[3]))) > 0.05


def test_simulate_traces_once_for_traced_parameters():
    # the physical parameters are data: a jitted function of them traces simulate once for all values
    run = jax.jit(
        chex.assert_max_traces(
            lambda key, a: (
                ksdp.simulate(
                    key, ksdp.Params(flow=a), (0.001,), n_particles=64, flow="laminar2d", check=False
                ).particles
            ),
            n=1,
        )
    )
    for a in (1.0, 10.0, 100.0):
        assert run(jax.random.key(0), jnp.float32(a)).shape == (1, 64, 2)


@pytest.mark.slow
def test_one_set_sweep_is_the_simulate_run_bit_for_bit():
    # A batch of one set runs simulate's own program (ksdp.euler.run_batched), so equality is exact, for a
    # drawn and for a given initial state.
    kw = dict(times=(0.001, 0.002), n_particles=200, flow="laminar2d", dt=DT)
    key = jax.random.key(11)
    one = ksdp.sweep(key, ksdp.Params(flow=jnp.array([3.0])), **kw)
    single = ksdp.simulate(jax.random.split(key, 1)[0], ksdp.Params(flow=3.0), **kw)
    assert one.particles.shape == (1,) + single.particles.shape
    np.testing.assert_array_equal(one.particles[0], single.particles)
    x0 = ksdp.uniform_ball(jax.random.key(12), 200, 2)
    kw.pop("n_particles")
    one = ksdp.sweep(key, ksdp.Params(flow=jnp.array([3.0])), x0=x0[None], **kw)
    single = ksdp.simulate(jax.random.split(key, 1)[0], ksdp.Params(flow=3.0), x0=x0, **kw)
    np.testing.assert_array_equal(one.particles[0], single.particles)
    assert int(one.nonfinite_step[0]) == -1 and one.health.shape == (1,)


def test_snapshot_times_and_initial_state():
    x0 = ksdp.uniform_ball(jax.random.key(3), 50, 2)
    traj = ksdp.simulate(jax.random.key(4), ksdp.Params(mu=0.0, chi=0.0), times=(0.0, 0.0005), x0=x0)
    np.testing.assert_array_equal(traj.particles[0], x0)
    np.testing.assert_array_equal(traj.particles[1], x0)  # nothing moves with chi = mu = A = 0
    np.testing.assert_allclose(traj.times, [0.0, 0.0005])
    assert int(traj.nonfinite_step) == -1


def test_user_flow_and_initial_law():
    # a user flow with a dict of parameters: rigid translation, so the mean moves by u * t exactly
    flow = lambda x, p: jnp.array([p["u"], 0.0])
    x0 = ksdp.uniform_ball(jax.random.key(5), 64, 2)
    traj = ksdp.simulate(jax.random.key(6), ksdp.Params(mu=0.0, flow={"u": 2.0}), times=(0.01,), x0=x0, flow=flow)
    shift = jnp.mean(traj.particles[0] - x0, axis=0)
    # the chemotactic drift sums to zero over particles (antisymmetric pairs), so the mean moves by
    # u t = 0.02; float32 round-off over 100 steps ~1e-6.
    np.testing.assert_allclose(shift, [0.02, 0.0], atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(d=4), "d=4"),
        (dict(dt=0.0), "dt"),
        (dict(dt=-1e-4), "dt"),
        (dict(n_particles=0), "n_particles"),
        (dict(params=ksdp.Params(delta=0.0)), "delta"),
        (dict(params=ksdp.Params(mu=-1.0)), "mu"),
        (dict(times=(0.02, 0.01)), "increasing"),
        (dict(times=(0.00015,)), "multiples of dt"),
        (dict(kernel="gauss"), "kernel"),
        (dict(flow="laminar3d"), "laminar3d"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = dict(params=ksdp.Params(), times=(0.001,), n_particles=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ksdp.simulate(jax.random.key(0), **args)


def test_bad_particles_and_flow_shape():
    with pytest.raises(ValueError, match="non-finite"):
        ksdp.simulate(jax.random.key(0), times=(0.001,), x0=jnp.array([[0.0, jnp.nan], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="x0"):
        ksdp.simulate(jax.random.key(0), times=(0.001,), x0=jnp.zeros((5, 3)), d=2)
    with pytest.raises(TypeError, match="flow"):
        ksdp.simulate(jax.random.key(0), times=(0.001,), n_particles=8, flow=lambda x, p: jnp.zeros(3))


def test_nonfinite_run_reports_step():
    # v = A x^2 (componentwise) blows up in finite time; Euler overflows float32 within a few
    # hundred steps from x ~ 1 with A = 1e3.
    flow = lambda x, a: a * x * x
    x0 = jnp.full((4, 2), 1.0)
    with pytest.raises(ksdp.NonFiniteError, match=r"step \d+ \(t = "):
        ksdp.simulate(jax.random.key(0), ksdp.Params(flow=1e3, chi=0.0, mu=0.0), times=(0.05,), x0=x0, flow=flow)
    traj = ksdp.simulate(
        jax.random.key(0), ksdp.Params(flow=1e3, chi=0.0, mu=0.0), times=(0.05,), x0=x0, flow=flow, check=False
    )
    step = int(traj.nonfinite_step)
    # cross-check the step with a plain Python Euler loop in float32
    x = np.float32(1.0)
    for n in range(1, 501):  # noqa: B007 (the step that turned non-finite is read after the loop)
        with np.errstate(over="ignore", invalid="ignore"):
            x = np.float32(x + np.float32(1e-4) * np.float32(1e3) * x * x)
        if not np.isfinite(x):
            break
    assert step == n


@pytest.mark.parametrize(
    "label,kwargs",
    [
        # past the collapse (T* = 0.096 for this law) the unregularised force between close particles
        # is unbounded: the run explodes while its positions are still finite
        ("exact kernel past the collapse", dict(kernel="exact", times=(0.12,))),
        # 600 times the mass: the regularised step moves a particle tens of delta at once
        ("huge mass", dict(params=ksdp.Params(mass=1e4), times=(0.01,))),
    ],
)
def test_health_flags_exploding_runs(label, kwargs):
    with pytest.raises(ksdp.NonFiniteError, match="unstable at step"):
        ksdp.simulate(jax.random.key(0), n_particles=256, **kwargs)
    traj = ksdp.simulate(jax.random.key(0), n_particles=256, check=False, **kwargs)
    assert int(traj.unstable_step) > 0 and float(traj.health) > ksdp.ipm.HEALTH_LIMIT


def test_health_of_a_healthy_run():
    # the paper's case through its collapse with the blob kernel: the regularised drift is bounded
    # (|grad K_delta| <= 1/(4 pi delta) in 2D), so dt |drift| / delta <= dt M / (4 pi delta^2) = 0.4;
    # the experiments' datasets reach 0.19 at most
    traj = ksdp.sweep(jax.random.key(0), ksdp.Params(mu=jnp.array([1.0, 1.0])), (0.05, 0.11), n_particles=256)
    assert np.all(np.asarray(traj.unstable_step) == -1)
    assert np.all(np.asarray(traj.health) < 0.4) and np.all(np.asarray(traj.health) > 0)


def _ou(x, rate):
    """A user flow with an exact Euler--Maruyama answer: the Ornstein--Uhlenbeck drift v = -rate x."""
    return -rate * x


@pytest.mark.parametrize(
    "label,flow,amplitude,d",
    [
        # the probe: Kolmogorov's flow at A = 1e4, dt times its rate of strain 2 pi A dt = 6.3
        ("Kolmogorov flow at A = 1e4", "kolmogorov3d", 1e4, 3),
        # a user flow of huge rate: Euler multiplies positions by |1 - rate dt| = 49 each step
        ("a user flow of huge rate", _ou, 5e5, 2),
    ],
)
def test_health_flags_a_flow_the_step_cannot_follow(label, flow, amplitude, d):
    kwargs = dict(params=ksdp.Params(flow=amplitude), times=(0.01,), n_particles=128, d=d, flow=flow)
    with pytest.raises(ksdp.NonFiniteError, match="the flow's velocity changed by .* reduce dt below"):
        ksdp.simulate(jax.random.key(0), **kwargs)
    traj = ksdp.simulate(jax.random.key(0), check=False, **kwargs)
    # the flow crossed the limit at the first step it could be seen, before anything overflowed
    assert float(traj.flow_health) > ksdp.ipm.HEALTH_LIMIT and int(traj.unstable_step) == 1


def test_flow_health_is_dt_times_the_rate_of_strain():
    # along a step the OU flow changes by exactly rate |dx|, so the flow's step is rate dt, to float32
    # round-off of the ratio of two differences (|dx| ~ 1e-2: a few 1e-5 relative); no flow: 0
    rate, dt = 30.0, 1e-3
    traj = ksdp.simulate(jax.random.key(1), ksdp.Params(chi=0.0, flow=rate), (0.01,), n_particles=64, flow=_ou, dt=dt)
    np.testing.assert_allclose(float(traj.flow_health), rate * dt, rtol=1e-3)
    still = ksdp.simulate(jax.random.key(1), ksdp.Params(), (0.01,), n_particles=64, dt=dt)
    assert float(still.flow_health) == 0.0


# the blob kernel with delta far above the cloud is a linear pull to the centre: -chi M / (2 pi J) sum_j
# (x_i - x_j) / (|x_i - x_j|^2 + delta^2) = -lam (x_i - mean x), lam = chi M / (2 pi delta^2), to a relative
# |x_i - x_j|^2 / delta^2 <= 1e-2 (pairs within 1 of each other, delta = 10): an Ornstein--Uhlenbeck
# interaction whose Euler--Maruyama error is known exactly
OU_RATE, OU_DELTA = 20.0, 10.0
OU = ksdp.Params(mass=OU_RATE * 2 * math.pi * OU_DELTA**2, delta=OU_DELTA)


def test_step_bias_sums_the_exact_local_errors():
    # one Euler--Maruyama step from the centred m = <|x - mean x|^2> gives (1 - lam dt)^2 m + 2 d mu dt (1 - 1/J),
    # the law e^(-2 lam dt) m + (d mu (1 - 1/J) / lam)(1 - e^(-2 lam dt)); their difference, the local error,
    # is lam dt^2 (2 d mu (1 - 1/J) - lam m), and Trajectory.step_bias is its sum over the steps before a
    # snapshot (its estimator is unbiased for this drift). Started at m = 0.02 (below 2 d mu / lam = 0.2,
    # so every term is positive), with the scheme's mean recursion for m. Tolerance: the estimator's noise
    # (about 0.4% of the sum, at 4 standard errors 1.6%), the realised m against its mean (0.3%) and the
    # kernel's departure from a linear pull (below 1% of the drift): 3%
    lam, dt, n, d, mu = OU_RATE, 1e-3, 20000, 2, 1.0
    x0 = 0.2 * ksdp.uniform_ball(jax.random.key(3), n, d)
    traj = ksdp.simulate(jax.random.key(2), OU, (0.02, 0.1), x0=x0, dt=dt, check=False)
    x64 = np.asarray(x0, np.float64)
    m, total, expected = float(np.mean(np.sum((x64 - x64.mean(0)) ** 2, -1))), 0.0, []
    for step in range(1, 101):
        if step in (20, 100):
            expected.append(total)  # the record sees the steps before the snapshot's
        total += lam * dt**2 * (2 * d * mu * (1 - 1 / n) - lam * m)
        m = (1 - lam * dt) ** 2 * m + 2 * d * mu * dt * (1 - 1 / n)
    np.testing.assert_allclose(np.asarray(traj.step_bias, np.float64), expected, rtol=0.03)


@pytest.mark.slow
def test_a_biased_step_warns_with_the_step_that_would_do(recwarn):
    # the pull above at J = 2000: a bias of 0.005 in m2 against a standard error of about 0.002 over
    # J particles (m2 = 0.1, sd of |x|^2 = m2 for a 2D Gaussian), where half of one is allowed; with half
    # the step it suggests, the bias (first order in dt) is a quarter of a standard error
    x0 = 0.2 * ksdp.uniform_ball(jax.random.key(3), 2000, 2)
    with pytest.warns(ksdp.StepSizeWarning, match=r"biased the second moment .* so dt = ") as caught:
        ksdp.simulate(jax.random.key(2), OU, (0.1,), x0=x0, dt=1e-3)
    suggested = float(str(caught[0].message).split("so dt = ")[1].split(" ")[0])
    assert 1e-4 < suggested < 5e-4
    traj = ksdp.simulate(jax.random.key(2), OU, (0.1,), x0=x0, dt=0.1 / math.ceil(0.1 / (suggested / 2)))
    assert not [w for w in recwarn if issubclass(w.category, ksdp.StepSizeWarning)]
    assert float(traj.step_bias[0]) > 0


@pytest.mark.slow
def test_a_step_that_biases_ks2d_is_flagged(recwarn):
    # the probe: ks2d at dt = 2.5e-4 is stable (health 0.25) but its core holds measurably less
    # mass than at 1e-4; at J = 20000 its m2 at t = 0.1 is 0.0025 too large (coupled step-halving:
    # 0.0019 to 0.0025, docs/model.md), 1.2 standard errors of m2; dt = 1e-4 stays under the limit at J = 2000
    with pytest.warns(ksdp.StepSizeWarning, match="t = 0.1"):
        ksdp.simulate(jax.random.key(0), ksdp.Params(), (0.05, 0.1), n_particles=20000, dt=2.5e-4)
    ksdp.simulate(jax.random.key(0), ksdp.Params(), (0.05, 0.1), n_particles=2000, dt=1e-4)
    assert not [w for w in recwarn if issubclass(w.category, ksdp.StepSizeWarning)]


def test_progress_reports_steps_and_changes_nothing(monkeypatch):
    # the opt-in bar is fed from inside the compiled scan (a host callback every hundredth of the steps):
    # the particles are the run without it, bit for bit, and the bar reaches the last reported step
    seen = []

    class Bar:
        n = 0

        def __init__(self, total, **_):
            self.total = total

        def update(self, k):
            self.n += k
            seen.append(self.n)

        def close(self):
            pass

    import tqdm.auto

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    kw = dict(times=(0.005,), n_particles=64)
    with_bar = ksdp.simulate(jax.random.key(0), ksdp.Params(), progress=True, **kw)
    np.testing.assert_array_equal(with_bar.particles, ksdp.simulate(jax.random.key(0), ksdp.Params(), **kw).particles)
    assert seen and seen[-1] == 50 and seen == sorted(seen)  # 50 steps, reported every step (50 // 100 -> 1)
    with pytest.raises(TypeError, match="progress"):
        ksdp.simulate(jax.random.key(0), ksdp.Params(), progress="yes", **kw)
