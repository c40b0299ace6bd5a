"""Bad input at the public doors: each case raises a ValueError or TypeError naming the argument.

One table per door; every row is a call that used to compute something silently wrong (or fail with
a message that did not say what was wrong).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ksdp
from ksdp import model as M
from ksdp import training as T
from ksdp import transport as TR
from ksdp import wasserstein as W

MC = M.make_config(2, [0.0, 1.0], width=4, depth=1)
MC_LOG = M.make_config(2, [1.0, 100.0], width=4, depth=1, eta_log=True)
PARAMS = M.init(jax.random.key(0), MC)
X = jax.random.normal(jax.random.key(1), (8, 2))
Y = jax.random.normal(jax.random.key(2), (8, 2))
TARGETS = jax.random.normal(jax.random.key(3), (2, 64, 2))
TINY = T.TrainConfig.paper(n_samples=16, resample_every=10, renew_every=10, sweeps=1, initial_sweeps=2, block=8)

MAKE_CONFIG = [
    ("d=2.0", dict(d=2.0, eta_train=[0.0, 1.0]), TypeError, "d must be an integer"),
    ("d=0", dict(d=0, eta_train=[0.0, 1.0]), ValueError, "d must be >= 1"),
    ("width=2.5", dict(d=2, eta_train=[0.0, 1.0], width=2.5), TypeError, "width must be an integer"),
    ("depth=0", dict(d=2, eta_train=[0.0, 1.0], depth=0), ValueError, "depth must be >= 1"),
    ("NaN eta_train", dict(d=2, eta_train=[0.0, math.nan]), ValueError, "eta_train contains NaN"),
    ("inf eta_train", dict(d=2, eta_train=[0.0, math.inf]), ValueError, "eta_train contains NaN or infinite"),
    ("log of 0", dict(d=2, eta_train=[0.0, 1.0], eta_log=True), ValueError, "not all positive"),
    ("identity_at=True", dict(d=2, eta_train=[0.0, 1.0], identity_at=True), TypeError, "identity_at"),
    ("fourier=-1", dict(d=2, eta_train=[0.0, 1.0], fourier=-1), ValueError, "fourier must be >= 0"),
    ("fourier=2.0", dict(d=2, eta_train=[0.0, 1.0], fourier=2.0), TypeError, "fourier must be an integer"),
    ("identity_at=NaN", dict(d=2, eta_train=[0.0, 1.0], identity_at=math.nan), ValueError, "identity_at"),
    (
        "identity_at with log10",
        dict(d=2, eta_train=[1.0, 10.0], eta_log=True, identity_at=1.0),
        ValueError,
        "identity_at needs one physical parameter",
    ),
    (
        "identity_at, plain network",
        dict(d=2, eta_train=[0.0, 1.0], residual=False, identity_at=0.0),
        ValueError,
        "residual",
    ),
    ("proportional=1", dict(d=2, eta_train=[1.0, 2.0], proportional=1), TypeError, "proportional"),
    (
        "proportional, a parameter <= 0",
        dict(d=2, eta_train=[0.0, 1.0], proportional=True),
        ValueError,
        "proportional needs one positive",
    ),
    (
        "proportional with identity_at",
        dict(d=2, eta_train=[1.0, 2.0], proportional=True, identity_at=1.0),
        ValueError,
        "no identity_at",
    ),
]


@pytest.mark.parametrize("label,kwargs,error,match", MAKE_CONFIG, ids=[c[0] for c in MAKE_CONFIG])
def test_make_config(label, kwargs, error, match):
    with pytest.raises(error, match=match):
        M.make_config(**kwargs)


GENERATE = [
    ("chunk=-1", MC, dict(eta=0.5, n=10, chunk=-1), "chunk must be a positive integer"),
    ("chunk=0", MC, dict(eta=0.5, n=10, chunk=0), "chunk must be a positive integer"),
    ("chunk=2.5", MC, dict(eta=0.5, n=10, chunk=2.5), "chunk must be a positive integer"),
    ("NaN eta", MC, dict(eta=math.nan, n=10), "eta contains NaN"),
    ("inf eta in a batch", MC, dict(eta=jnp.array([0.5, jnp.inf]), n=10), "eta contains NaN or infinite"),
    ("log eta <= 0", MC_LOG, dict(eta=0.0, n=10), "positive"),
    ("eta overflowing once normalised", MC, dict(eta=3e38, n=10), "overflows"),
    ("n=0", MC, dict(eta=0.5, n=0), "n \\(particles"),
    ("source='sobol'", MC, dict(eta=0.5, n=10, source="sobol"), "source must be one of"),
    ("stratified beyond 2^24", MC, dict(eta=0.5, n=2**24 + 1, source="stratified"), "at most 2\\^24"),
]


@pytest.mark.parametrize("label,cfg,kwargs,match", GENERATE, ids=[c[0] for c in GENERATE])
def test_generate(label, cfg, kwargs, match):
    params = PARAMS if cfg is MC else M.init(jax.random.key(0), cfg)
    with pytest.raises(ValueError, match=match):
        M.generate(jax.random.key(0), cfg, params, **kwargs)


TRAIN = [
    ("block=1 (no matching)", dict(cfg=TINY._replace(block=1)), ValueError, "block"),
    ("block=0", dict(cfg=TINY._replace(block=0)), ValueError, "block"),
    ("checkpoint_every=0", dict(checkpoint_every=0), ValueError, "checkpoint_every"),
    ("debias=1", dict(cfg=TINY._replace(debias=1)), TypeError, "debias"),
    ("match_sources=1", dict(cfg=TINY._replace(match_sources=1)), TypeError, "match_sources"),
    ("min_min_after=True", dict(cfg=TINY._replace(match_sources=True, min_min_after=True)), TypeError, "min_min"),
    ("min_min_after=-1", dict(cfg=TINY._replace(match_sources=True, min_min_after=-1)), ValueError, "min_min"),
    ("min_min_after without match_sources", dict(cfg=TINY._replace(min_min_after=10)), ValueError, "match_sources"),
    ("NaN eta", dict(eta=jnp.array([0.0, jnp.nan])), ValueError, "eta contains NaN"),
    ("NaN target", dict(targets=TARGETS.at[0, 0, 0].set(jnp.nan)), ValueError, "non-finite"),
]


@pytest.mark.parametrize("label,change,error,match", TRAIN, ids=[c[0] for c in TRAIN])
def test_train(label, change, error, match):
    kw = dict(targets=TARGETS, eta=jnp.array([0.0, 1.0]), cfg=TINY) | change
    extra = {k: v for k, v in kw.items() if k not in ("targets", "eta", "cfg")}
    with pytest.raises(error, match=match):
        T.train(jax.random.key(0), kw["targets"], kw["eta"], MC, kw["cfg"], n_steps=10, progress=False, **extra)


SOLVE = [
    ("max_sweeps=0", dict(max_sweeps=0), "max_sweeps"),
    ("max_sweeps=2.5", dict(max_sweeps=2.5), "max_sweeps"),
    ("rtol=nan", dict(rtol=math.nan), "rtol"),
    ("rtol<0", dict(rtol=-1e-3), "rtol"),
    ("exact_max=-1", dict(exact_max=-1), "exact_max"),
    ("warm start not a permutation", dict(perm=jnp.zeros(8, jnp.int32)), "permutation"),
    ("warm start of floats", dict(perm=jnp.arange(8.0)), "permutation"),
    ("block=1", dict(block=1), "block"),
]


@pytest.mark.parametrize("label,kwargs,match", SOLVE, ids=[c[0] for c in SOLVE])
def test_solve(label, kwargs, match):
    with pytest.raises(ValueError, match=match):
        TR.solve(jax.random.key(0), X, Y, **kwargs)


def test_valid_calls_still_work():
    # the checks reject only what is wrong: a permutation warm start, rtol = 0, a chunk larger than n
    res = TR.solve(jax.random.key(0), X, Y, perm=jnp.arange(8)[::-1], rtol=0.0, max_sweeps=3)
    assert sorted(np.asarray(res.perm).tolist()) == list(range(8))
    assert M.generate(jax.random.key(0), MC, PARAMS, 0.5, 10, chunk=1000).shape == (10, 2)
    assert M.generate(jax.random.key(0), MC_LOG, M.init(jax.random.key(0), MC_LOG), 3.0, 5).shape == (5, 2)


SIMULATE = [
    ("batched mu", dict(params=ksdp.Params(mu=jnp.array([0.0, 1.0]), chi=0.0)), ValueError, "use ksdp.sweep"),
    ("mu as a list", dict(params=ksdp.Params(mu=[1.0, 2.0])), ValueError, "params.mu has shape"),
    ("batched flow amplitude", dict(params=ksdp.Params(flow=jnp.ones(3)), flow="laminar2d"), ValueError, "sweep"),
    ("NaN flow amplitude", dict(params=ksdp.Params(flow=math.nan), flow="laminar2d"), ValueError, "params.flow"),
    ("flow returning None", dict(flow=lambda x, a: None), TypeError, "must map one position"),
    ("flow of the wrong shape", dict(flow=lambda x, a: x[:1]), TypeError, "must map one position"),
    ("flow that fails", dict(flow=lambda x, a: x @ jnp.ones((5, 5))), TypeError, "flow function failed"),
    ("d=2.0", dict(d=2.0), TypeError, "d \\(the space dimension\\)"),
    ("dt=1e-300", dict(dt=1e-300), ValueError, "increase dt"),
    ("params not Params", dict(params={"mu": 1.0}), TypeError, "ksdp.Params"),
]


@pytest.mark.parametrize("label,kwargs,error,match", SIMULATE, ids=[c[0] for c in SIMULATE])
def test_simulate(label, kwargs, error, match):
    kw = dict(times=(0.001,), n_particles=16) | kwargs
    with pytest.raises(error, match=match):
        ksdp.simulate(jax.random.key(0), **kw)


def test_sweep_checks_a_shared_x0_against_d():
    # a shared [J, 3] x0 with d = 2 used to run in 3D
    with pytest.raises(ValueError, match="d=2"):
        ksdp.sweep(jax.random.key(0), ksdp.Params(mu=jnp.array([0.0, 1.0])), (0.001,), x0=jnp.zeros((16, 3)), d=2)


SWEEP_AND_DATASET = [
    ("sweep: 3 keys for 2 sets", "sweep", dict(key=jax.random.split(jax.random.key(0), 3)), "3 keys for 2"),
    ("sweep: a [2, 2] array of typed keys", "sweep", dict(key=jax.random.split(jax.random.key(0), (2, 2))), "key"),
    ("make_dataset: chunk=0", "make_dataset", dict(chunk=0), "chunk must be a positive integer"),
    ("make_dataset: chunk=1.5", "make_dataset", dict(chunk=1.5), "chunk must be a positive integer"),
    ("make_dataset: chunk=True", "make_dataset", dict(chunk=True), "chunk must be a positive integer"),
]


@pytest.mark.parametrize("label,door,kwargs,match", SWEEP_AND_DATASET, ids=[c[0] for c in SWEEP_AND_DATASET])
def test_sweep_and_make_dataset(label, door, kwargs, match):
    kw = dict(key=jax.random.key(0), params=ksdp.Params(mu=jnp.array([0.0, 1.0])), times=(0.001,), n_particles=16)
    with pytest.raises(ValueError, match=match):
        getattr(ksdp, door)(**(kw | kwargs))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=-2, max_value=9), min_size=8, max_size=8))
def test_warm_start_is_accepted_exactly_when_it_is_a_permutation(values):
    # property: solve starts from any permutation of 0..7 and refuses every other integer vector
    perm = jnp.asarray(values, jnp.int32)
    if sorted(values) == list(range(8)):
        res = TR.solve(jax.random.key(0), X, Y, perm=perm, max_sweeps=1)
        assert sorted(np.asarray(res.perm).tolist()) == list(range(8))
    else:
        with pytest.raises(ValueError, match="permutation"):
            TR.solve(jax.random.key(0), X, Y, perm=perm, max_sweeps=1)


@settings(max_examples=40, deadline=None)
@given(st.one_of(st.floats(-1e30, 1e30), st.sampled_from([math.nan, math.inf, -math.inf])))
def test_generate_accepts_exactly_the_finite_eta(eta):
    # property: any finite eta (far outside the training range too) generates finite particles; NaN
    # and inf are refused. (An eta whose normalised value overflows float32, |eta| ~ 1e38, is refused.)
    if math.isfinite(eta):
        assert np.all(np.isfinite(M.generate(jax.random.key(0), MC, PARAMS, eta, 4)))
    else:
        with pytest.raises(ValueError, match="eta"):
            M.generate(jax.random.key(0), MC, PARAMS, eta, 4)


@pytest.mark.parametrize("scale", [1e20, 1e-20])
def test_w2_in_any_unit(scale):
    # float32 squared distances overflow beyond ~1e19 (underflow below ~1e-19); W2 scales with the unit
    d1, p1 = W.w2(X, Y)[:2]
    d2, p2 = W.w2(X * scale, Y * scale)[:2]
    np.testing.assert_array_equal(np.asarray(p1), np.asarray(p2))
    np.testing.assert_allclose(float(d2), float(d1) * scale, rtol=1e-5)  # float32 round-off of the rescale


def test_loose_readings_are_refused():
    # booleans are not counts, negative counts do not mean "all but", 2D input is not a list of runs
    from ksdp import metrics as km

    cloud = np.zeros((10, 2), np.float32)
    with pytest.raises(ValueError, match="n "):
        M.generate(jax.random.key(0), MC, PARAMS, 0.5, True)
    with pytest.raises(ValueError, match="n must"):
        M.folded_fraction(jax.random.key(0), MC, PARAMS, 0.5, True)
    with pytest.raises(ValueError, match="c2st_points"):
        km.compare(jax.random.key(0), cloud, cloud, c2st_points=-5)
    with pytest.raises(ValueError, match="energy_points"):
        km.compare(jax.random.key(0), cloud, cloud, energy_points=True)
    with pytest.raises(ValueError, match="1D"):
        km.run_spread([[1.0, 2.0], [3.0, 4.0]])
    # True is an int to Python: every count refuses it (one shared check, ksdp._checks.is_integer)
    for call, match in (
        (lambda: ksdp.simulate(jax.random.key(0), n_particles=True), "n_particles"),
        (lambda: ksdp.simulate(jax.random.key(0), n_particles=8, tile=True), "tile"),
        (lambda: T.train(jax.random.key(0), TARGETS, [0.0, 1.0], MC, TINY, n_steps=True, progress=False), "n_steps"),
        (lambda: TR.solve(jax.random.key(0), X, Y, block=True), "block"),
    ):
        with pytest.raises((ValueError, TypeError), match=match):
            call()


def test_lower_doors_check_what_simulate_checks():
    # the mesh doors refuse a grid too coarse for delta (a cloud 100 wide on 64 cells: 9-13% error;
    # simulate refuses the same cell), NaN or infinite positions and a delta that is not positive;
    # check=False takes the result anyway; under jit nothing concrete is there to check
    from ksdp import particle_mesh as pm

    x = ksdp.uniform_ball(jax.random.key(0), 500, 2)
    wide = x * 50.0
    with pytest.raises(ValueError, match="largest cell"):
        pm.pair_sum(wide, wide, 0.03, grid=64)
    with pytest.raises(ValueError, match="largest cell"):
        ksdp.velocity(wide, ksdp.Params(), drift="pm", grid=64)
    assert np.all(np.isfinite(pm.pair_sum(wide, wide, 0.03, grid=64, check=False)))
    assert np.all(np.isfinite(jax.jit(lambda a: pm.pair_sum(a, a, 0.03, grid=64))(wide)))
    for call in (
        lambda: pm.pair_sum(x.at[3, 1].set(jnp.nan), x, 0.03, grid=128),
        lambda: ksdp.velocity(x.at[3, 1].set(jnp.inf), ksdp.Params()),
    ):
        with pytest.raises(ValueError, match="NaN or infinite"):
            call()
    for delta in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="delta"):
            ksdp.velocity(x, ksdp.Params(delta=delta))
        with pytest.raises(ValueError, match="delta"):
            pm.pair_sum(x, x, delta, grid=128)
        with pytest.raises(ValueError, match="delta"):  # the direct sum too
            ksdp.pair_sum(x, x, delta)
    with pytest.raises(ValueError, match="NaN or infinite"):
        ksdp.pair_sum(x, x.at[0, 0].set(jnp.nan), 0.03)
    assert np.all(np.isfinite(ksdp.pair_sum(x, x, 0.0, kernel="exact")))  # the exact kernel has no delta


@pytest.mark.slow
def test_numpy_booleans_are_refused_where_json_would_refuse_them(tmp_path):
    # a TrainConfig is written to checkpoints as JSON, which takes Python's bool and not numpy's: the
    # check names the field at once instead of the checkpoint write failing after the first mini-batch
    targets = np.zeros((2, 32, 2), np.float32)
    mc = M.make_config(2, [0.0, 1.0], width=4, depth=1)
    for field in ("debias", "match_sources"):
        with pytest.raises(TypeError, match=field):
            T.check_inputs(mc, TINY._replace(**{field: np.bool_(True)}), targets, [0.0, 1.0])

    # numpy numbers are taken as the numbers they hold
    numpy_cfg = TINY._replace(n_samples=np.int64(16), learning_rate=np.float32(1e-3))
    ck = str(tmp_path / "ck.npz")
    res = T.train(jax.random.key(0), targets, [0.0, 1.0], mc, numpy_cfg, n_steps=10, checkpoint=ck, progress=False)
    assert type(T.load_checkpoint(ck)[2].n_samples) is int and res.history
