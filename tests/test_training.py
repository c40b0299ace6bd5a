"""DeepParticle training: a learnable family with a known answer, resume, compile count, errors."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from compiles import compilations
from damage import CHECKPOINT_DAMAGE, rewrite

from ksdp import model as M
from ksdp import training as T
from ksdp import wasserstein as W
from ksdp.initial import uniform_ball


def target(key, eta, n):
    """Closed-form family: anisotropic Gaussian whose scales and mean move with eta."""
    return jax.random.normal(key, (n, 2)) * jnp.array([0.2 + 0.3 * eta, 0.3 - 0.1 * eta]) + jnp.array([0.5 * eta, 0.0])


ETAS = jnp.linspace(0.0, 1.0, 5)
TINY = T.TrainConfig.paper(
    n_samples=32, resample_every=20, renew_every=10, sweeps=2, initial_sweeps=4, block=8, learning_rate=1e-3
)


@pytest.fixture(scope="module")
def trained():
    targets = jnp.stack([target(jax.random.key(i), e, 2000) for i, e in enumerate(ETAS)])
    mc = M.make_config(2, ETAS, width=30, depth=3)
    cfg = T.TrainConfig.paper(
        n_samples=500, resample_every=500, renew_every=50, sweeps=4, initial_sweeps=20, block=16, learning_rate=3e-3
    )
    return T.train(jax.random.key(0), targets, ETAS, mc, cfg, n_steps=5000, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("eta", [0.375, 0.625])
def test_learns_held_out_parameter(trained, eta):
    # W2 between generated and fresh target samples against the noise floor, W2 between two
    # independent target samples of the same size (n = 500, exact Hungarian). Each W2 fluctuates by
    # ~10% between draws, so both are averaged over 4 independent draws. The bar is 1.5x.
    n, w, floor = 500, [], []
    for r in range(4):
        ref = target(jax.random.key(100 + r), eta, n)
        gen = M.generate(jax.random.key(5 + r), trained.model, trained.params, eta, n)
        w.append(float(W.w2(gen, ref, exact_max=512)[0]))
        floor.append(float(W.w2(target(jax.random.key(200 + r), eta, n), ref, exact_max=512)[0]))
    ratio = np.mean(w) / np.mean(floor)
    assert ratio < 1.5, (np.mean(w), np.mean(floor))
    assert trained.history[-1] < 0.2 * trained.history[0]


@pytest.mark.slow
def test_generation_shapes_chunks_and_extrapolation(trained):
    g = M.generate(jax.random.key(0), trained.model, trained.params, 0.5, 200_003, chunk=65536)
    assert g.shape == (200_003, 2) and np.all(np.isfinite(g))
    gb = M.generate(jax.random.key(1), trained.model, trained.params, jnp.array([0.2, 1.5]), 1000)
    assert gb.shape == (2, 1000, 2) and np.all(np.isfinite(gb))
    # extrapolation follows the trend of the mean (0.5 eta) beyond the training range, loosely:
    # the sample mean of 1000 points has standard error ~0.02 per coordinate.
    assert gb[1, :, 0].mean() > gb[0, :, 0].mean() + 0.3
    with pytest.raises(ValueError, match="eta"):
        M.generate(jax.random.key(0), trained.model, trained.params, jnp.zeros((2, 3)), 10)
    with pytest.raises(ValueError, match="n "):
        M.generate(jax.random.key(0), trained.model, trained.params, 0.5, 0)


@pytest.mark.slow
def test_folded_fraction_of_known_maps():
    # zero weights: the residual map is the identity (det = 1 everywhere), nothing folds
    cfg = M.make_config(2, ETAS[:3], width=8, depth=2)
    params = M.init(jax.random.key(0), cfg)
    zero = jax.tree_util.tree_map(jnp.zeros_like, params)
    assert M.folded_fraction(jax.random.key(1), cfg, zero, 0.5, 2000) == (0.0, 1 / 2000)
    np.testing.assert_allclose(M.jacobian_determinant(cfg, zero, jnp.ones((3, 2)) * 0.3, 0.5), 1.0, atol=1e-6)
    # large random weights fold the ball; the determinant agrees with central differences
    # (h = 1e-2 on a float32 map whose weights are ~ 5: the error is O(h^2) ~ 1e-3 relative; only
    # points with |det| > 0.05 are compared by sign), and the fraction is that of the same points
    big = jax.tree_util.tree_map(lambda a: 5.0 * a, params)
    frac, se = M.folded_fraction(jax.random.key(1), cfg, big, 0.5, 2000)
    x = uniform_ball(jax.random.key(1), 2000, 2)
    det = np.asarray(M.jacobian_determinant(cfg, big, x, 0.5))
    assert 0.02 < frac < 0.98 and frac == np.mean(det <= 0)
    np.testing.assert_allclose(se, np.sqrt(frac * (1 - frac) / 2000))
    h = 1e-2
    f = lambda p: np.asarray(M.apply(cfg, big, p, jnp.array([0.5])), np.float64)
    cols = [(f(x + h * e) - f(x - h * e)) / (2 * h) for e in np.eye(2, dtype=np.float32)]
    fd = cols[0][:, 0] * cols[1][:, 1] - cols[0][:, 1] * cols[1][:, 0]
    clear = np.abs(det) > 0.05
    assert clear.mean() > 0.9 and np.all(np.sign(fd[clear]) == np.sign(det[clear]))
    with pytest.raises(ValueError, match="one parameter value"):
        M.folded_fraction(jax.random.key(1), cfg, big, jnp.array([0.2, 0.5]), 10)
    with pytest.raises(ValueError, match="x must be"):
        M.jacobian_determinant(cfg, big, jnp.ones((3, 3)), 0.5)


@pytest.mark.slow
def test_match_sources_couples_the_sources_whatever_the_network():
    # the matching of a mini-batch's sources to its targets does not depend on the parameters: two
    # networks trained one mini-batch from the same key end with the same permutations (exact: the
    # same integer sweeps on the same points), while the min-min matching of f(x) differs
    targets, etas, mc = _tiny_problem()
    cfg = TINY._replace(match_sources=True)
    fp = T.fingerprint(jax.random.key(0), targets, etas, mc, TINY)
    targets, etas = T.check_inputs(mc, cfg, targets, etas)
    a = T.init_state(jax.random.key(0), mc, cfg, 3)
    b = a._replace(params=M.init(jax.random.key(9), mc))
    pa = T.train_minibatch(a, targets, etas, mc, cfg)[0].perm
    pb = T.train_minibatch(b, targets, etas, mc, cfg)[0].perm
    np.testing.assert_array_equal(pa, pb)
    # with the debiased loss the targets' matching is still the sources'; the self term's is of f(x)
    both = cfg._replace(debias=True)
    a2 = T.init_state(jax.random.key(0), mc, both, 3)
    b2 = a2._replace(params=b.params)
    ra = T.train_minibatch(a2, targets, etas, mc, both)[0].perm
    rb = T.train_minibatch(b2, targets, etas, mc, both)[0].perm
    np.testing.assert_array_equal(ra[:, 0], rb[:, 0])
    assert not np.array_equal(ra[:, 1], rb[:, 1])
    qa = T.train_minibatch(a, targets, etas, mc, TINY)[0].perm
    qb = T.train_minibatch(b, targets, etas, mc, TINY)[0].perm
    assert not np.array_equal(qa, qb)
    # the matching is in the fingerprint: a checkpoint of one does not resume the other
    assert T.fingerprint(jax.random.key(0), targets, etas, mc, cfg) != fp


def test_radial_objective_pairs_each_rank_with_its_quantile():
    # the k-th smallest generated distance is paired with the quantile (k + 1/2) / M of the set's J
    # sorted distances; the gradient at a point is (2 / M)(r - q) f / r. Exact algebra against a
    # numpy transcription; float32 round-off (1e-6 of the O(1) value and O(1 / M) entries).
    m, j = 100, 1000
    targets = uniform_ball(jax.random.key(1), 2 * j, 2).reshape(2, j, 2) * jnp.array([1.0, 2.0])[:, None, None]
    quantiles = T.radial_quantiles(targets)
    np.testing.assert_allclose(quantiles, np.sort(np.linalg.norm(np.asarray(targets), axis=-1), -1), rtol=1e-6)
    f = jax.random.normal(jax.random.key(2), (2, m, 2))
    r = np.linalg.norm(np.asarray(f), axis=-1)
    rank = np.argsort(np.argsort(r, -1), -1)
    q = np.take_along_axis(np.asarray(quantiles), (2 * rank + 1) * j // (2 * m), -1)
    np.testing.assert_allclose(T.radial_objective(f, quantiles), np.mean((r - q) ** 2), rtol=1e-6)
    grad = jax.grad(T.radial_objective)(f, quantiles)
    expected = 2 / (2 * m) * ((r - q) / r)[..., None] * np.asarray(f)
    np.testing.assert_allclose(grad, expected, atol=1e-6 / m)
    assert float(jnp.max(jnp.abs(jax.grad(T.radial_objective, argnums=1)(f, quantiles)))) == 0.0
    # points at exactly their ranks' quantiles (any directions) cost nothing
    at = f / jnp.asarray(r)[..., None] * jnp.asarray(q)[..., None]
    assert float(T.radial_objective(at, quantiles)) < 1e-10


def test_radial_objective_with_many_quantiles():
    # J = 4 x 10^5 training distances against M = 4000 generated points, the paper-scale ks2d-time pool
    # of 40 runs against 2N: (2k + 1) J overflowed int32 there. The levels against numpy's int64
    # transcription, exactly; the objective to float32 round-off (1e-6 of its O(1) value)
    m, j = 4000, 400_000
    quantiles = jnp.linspace(0.0, 2.0, j)[None]
    f = jax.random.normal(jax.random.key(3), (1, m, 2))
    r = np.linalg.norm(np.asarray(f), axis=-1)
    rank = np.argsort(np.argsort(r, -1), -1).astype(np.int64)
    level = (2 * rank + 1) * j // (2 * m)
    assert level.max() < j and (2 * rank.max() + 1) * j >= 2**31  # the product does not fit int32
    q = np.asarray(quantiles)[0, level]
    np.testing.assert_allclose(T.radial_objective(f, quantiles), np.mean((r - q) ** 2), rtol=1e-6)
    # the exact form's limit: 4 M^2 < 2^31, checked before any work, naming what to lower
    too_many = T.RADIAL_MAX_POINTS + 1
    with pytest.raises(ValueError, match="M = 23171"):
        T.radial_objective(jnp.zeros((1, too_many, 2)), quantiles)
    assert 4 * T.RADIAL_MAX_POINTS**2 < 2**31 <= 4 * too_many**2


def test_radial_weight_is_checked_and_keeps_old_fingerprints():
    targets, etas, mc = _tiny_problem()
    fp = T.fingerprint(jax.random.key(0), targets, etas, mc, TINY)
    assert T.fingerprint(jax.random.key(0), targets, etas, mc, TINY._replace(radial_weight=0.0)) == fp
    assert T.fingerprint(jax.random.key(0), targets, etas, mc, TINY._replace(radial_weight=1.0)) != fp
    with pytest.raises(ValueError, match="radial_weight"):
        T.check_inputs(mc, TINY._replace(radial_weight=-1.0), targets, etas)
    with pytest.raises(ValueError, match="radial_weight"):
        T.check_inputs(mc, TINY._replace(radial_weight=float("inf")), targets, etas)
    with pytest.raises(TypeError, match="radial_weight"):
        T.check_inputs(mc, TINY._replace(radial_weight=True), targets, etas)
    # its ranks are int32: at most RADIAL_MAX_POINTS generated points per set (2N with debias)
    n = T.RADIAL_MAX_POINTS // 2 + 1
    big = jnp.zeros((targets.shape[0], n, targets.shape[2]))
    with pytest.raises(ValueError, match="radial_weight ranks 2N .* lower TrainConfig.n_samples"):
        T.check_inputs(mc, TINY._replace(radial_weight=1.0, n_samples=n, debias=True), big, etas)
    T.check_inputs(mc, TINY._replace(radial_weight=1.0, n_samples=n - 1, debias=True), big, etas)


@pytest.mark.slow
def test_min_min_after_switches_the_matching_at_its_step():
    # before the step the sources are matched, from it on the generated points: the permutations are
    # those of match_sources alone and of the min-min (the same integer sweeps on the same points)
    targets, etas, mc = _tiny_problem()
    sources = TINY._replace(match_sources=True)
    switch = sources._replace(min_min_after=2 * TINY.resample_every)
    targets, etas = T.check_inputs(mc, switch, targets, etas)
    early = T.init_state(jax.random.key(0), mc, switch, 3)
    late = early._replace(step=early.step + 2 * TINY.resample_every)
    np.testing.assert_array_equal(
        T.train_minibatch(early, targets, etas, mc, switch)[0].perm,
        T.train_minibatch(early, targets, etas, mc, sources)[0].perm,
    )
    np.testing.assert_array_equal(
        T.train_minibatch(late, targets, etas, mc, switch)[0].perm,
        T.train_minibatch(late, targets, etas, mc, TINY)[0].perm,
    )
    fp = T.fingerprint(jax.random.key(0), targets, etas, mc, sources)
    assert T.fingerprint(jax.random.key(0), targets, etas, mc, switch) != fp


@pytest.mark.parametrize("d", [2, 3])
def test_tail_coordinate_is_exponential_under_the_source(d):
    # |x|^d is uniform under the uniform ball, so -log(1 - |x|^d) is Exp(1): mean 1 and P(psi > 3) =
    # e^-3; at n = 20000 their standard errors are 1/sqrt(n) = 0.007 and 0.0017 (4 of them allowed)
    psi = np.asarray(M.tail_coordinate(uniform_ball(jax.random.key(d), 20000, d)))[:, 0]
    assert abs(psi.mean() - 1.0) < 4 * 0.0071
    assert abs(np.mean(psi > 3.0) - np.exp(-3.0)) < 4 * 0.0017
    # finite up to the ball's edge (floored at the float32 spacing below 1), ~|x|^d at the centre
    edge = np.asarray(M.tail_coordinate(jnp.eye(d, dtype=jnp.float32)))
    assert np.all(np.isfinite(edge)) and np.all(edge < 17.0)
    np.testing.assert_allclose(
        M.tail_coordinate(jnp.full((1, d), 0.01, jnp.float32)), (0.01**2 * d) ** (d / 2), rtol=1e-3
    )


@pytest.mark.slow
def test_tail_feature_network_trains_and_resumes(tmp_path):
    targets, etas, mc = _tiny_problem()
    tail = mc._replace(tail_feature=True)
    assert M.ModelConfig.from_dict(tail.to_dict()) == tail
    assert T.fingerprint(jax.random.key(3), targets, etas, tail, TINY) != T.fingerprint(
        jax.random.key(3), targets, etas, mc, TINY
    )
    ck = str(tmp_path / "ck.npz")
    res = T.train(jax.random.key(3), targets, etas, tail, TINY, n_steps=20, checkpoint=ck, progress=False)
    assert T.load_checkpoint(ck)[1] == tail
    # one more input (the tail coordinate) than the plain network's first layer
    first = [a.shape for a in jax.tree_util.tree_leaves(res.params) if a.ndim == 2]
    assert (2 + 1 + 1, 8) in first
    assert np.all(np.isfinite(M.generate(jax.random.key(0), tail, res.params, 0.5, 100)))
    with pytest.raises(T.CheckpointMismatch):
        T.train(jax.random.key(3), targets, etas, mc, TINY, n_steps=40, checkpoint=ck, progress=False)


@pytest.mark.slow
def test_identity_at_is_the_identity_there(tmp_path):
    # x + (|eta - a| / scale) MLP: exactly x at eta = a whatever the parameters (the factor is 0);
    # elsewhere the MLP's output scaled by that factor (float32 round-off); resumes from its checkpoint
    targets, etas, mc = _tiny_problem()
    ident = M.make_config(2, etas, width=8, depth=2, identity_at=float(etas[0]))
    assert mc.identity_at is None and M.ModelConfig.from_dict(ident.to_dict()) == ident
    params = M.init(jax.random.key(5), ident)
    x = uniform_ball(jax.random.key(6), 64, 2)
    np.testing.assert_array_equal(M.apply(ident, params, x, etas[0:1]), x)
    free = M.apply(ident._replace(identity_at=None), params, x, etas[2:3]) - x
    factor = abs(float(etas[2] - etas[0])) / ident.eta_scale[0]
    np.testing.assert_allclose(M.apply(ident, params, x, etas[2:3]) - x, factor * free, rtol=1e-5, atol=1e-6)
    ck = str(tmp_path / "ck.npz")
    T.train(jax.random.key(3), targets, etas, ident, TINY, n_steps=20, checkpoint=ck, progress=False)
    assert T.load_checkpoint(ck)[1] == ident
    with pytest.raises(T.CheckpointMismatch):
        T.train(jax.random.key(3), targets, etas, mc, TINY, n_steps=40, checkpoint=ck, progress=False)


def _tiny_problem():
    targets = jnp.stack([target(jax.random.key(i), e, 64) for i, e in enumerate(ETAS[:3])])
    return targets, ETAS[:3], M.make_config(2, ETAS[:3], width=8, depth=2)


@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path):
    targets, etas, mc = _tiny_problem()
    full = T.train(jax.random.key(3), targets, etas, mc, TINY, n_steps=60, progress=False)
    ck = str(tmp_path / "ck.npz")
    T.train(jax.random.key(3), targets, etas, mc, TINY, n_steps=20, checkpoint=ck, progress=False)
    state, _, _, hist, _ = T.load_checkpoint(ck)
    assert int(state.step) == 20 and len(hist) == 20
    resumed = T.train(jax.random.key(3), targets, etas, mc, TINY, n_steps=60, checkpoint=ck, progress=False)
    # the same jitted mini-batch on the same state and keys: identical up to float32 round-off
    for a, b in zip(jax.tree_util.tree_leaves(full.params), jax.tree_util.tree_leaves(resumed.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(full.history, resumed.history, rtol=1e-5)
    with pytest.raises(T.CheckpointMismatch, match="another model"):
        T.train(jax.random.key(3), targets, etas, mc, TINY._replace(learning_rate=0.1), n_steps=60, checkpoint=ck)


def test_progress_lines_for_a_log(tmp_path):
    # a callable progress gets a line at every twentieth of what is left to train, and one at the end;
    # resuming from a checkpoint at step 20 of 60 leaves 2 mini-batches: one line each
    targets, etas, mc = _tiny_problem()
    lines: list = []
    T.train(jax.random.key(3), targets, etas, mc, TINY, n_steps=60, progress=lines.append)
    assert [ln.split(",")[0] for ln in lines] == [
        "  train: step 20/60 (33%)",
        "  train: step 40/60 (67%)",
        "  train: step 60/60 (100%)",
    ]
    assert all("mini-batch loss" in ln and "steps/s" in ln and "min left" in ln for ln in lines)
    ck = str(tmp_path / "ck.npz")
    T.train(jax.random.key(3), targets, etas, mc, TINY, n_steps=20, checkpoint=ck, progress=False)
    lines.clear()
    T.train(jax.random.key(3), targets, etas, mc, TINY, n_steps=60, checkpoint=ck, progress=lines.append)
    assert [ln.split(" (")[0] for ln in lines] == ["  train: step 40/60", "  train: step 60/60"]
    with pytest.raises(TypeError, match="progress"):
        T.train(jax.random.key(3), targets, etas, mc, TINY, n_steps=20, progress="yes")


@pytest.mark.parametrize("change", ["targets", "eta", "key", "fewer steps", "no fingerprint"])
def test_checkpoint_resumes_only_for_its_data(tmp_path, change):
    # the checkpoint's fingerprint covers targets, eta, key and configs; a shorter run than the one
    # stored is refused too (it would return the longer-trained state)
    targets, etas, mc = _tiny_problem()
    ck = str(tmp_path / "ck.npz")
    T.train(jax.random.key(3), targets, etas, mc, TINY, n_steps=40, checkpoint=ck, progress=False)
    key, n_steps = jax.random.key(3), 60
    if change == "targets":
        targets = targets.at[0, 0, 0].add(1e-3)
    elif change == "eta":
        etas = etas.at[1].add(1e-3)
    elif change == "key":
        key = jax.random.key(4)
    elif change == "no fingerprint":  # written before checkpoints carried one
        rewrite(
            ck, lambda a: a.__setitem__("meta_json", np.asarray(str(a["meta_json"]).replace('"fingerprint"', '"x"')))
        )
    else:
        n_steps = 20
    match = {"fewer steps": "more than n_steps", "no fingerprint": "no fingerprint"}.get(change, "other training data")
    with pytest.raises(T.CheckpointMismatch, match=match):
        T.train(key, targets, etas, mc, TINY, n_steps=n_steps, checkpoint=ck, progress=False)
    # resume=False trains afresh and overwrites it
    res = T.train(key, targets, etas, mc, TINY, n_steps=n_steps, checkpoint=ck, resume=False, progress=False)
    assert T.load_checkpoint(ck)[4]["fingerprint"] == T.fingerprint(key, targets, etas, mc, TINY)
    assert len(res.history) == n_steps


@pytest.mark.slow
def test_moving_average_and_learning_rate_decay():
    # ema_decay: the returned parameters are the moving average e_n = a e_{n-1} + (1 - a) p_n, which
    # lags the last iterate p_n
    targets, etas, mc = _tiny_problem()
    cfg = TINY._replace(ema_decay=0.9, decay_steps=40)
    res = T.train(jax.random.key(4), targets, etas, mc, cfg, n_steps=40, progress=False)
    assert res.params is res.state.ema
    diff = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(
            jax.tree_util.tree_leaves(res.state.ema), jax.tree_util.tree_leaves(res.state.params), strict=True
        )
    )
    assert diff > 0  # the average lags the iterate

    # the decayed rate: after decay_steps the Adam updates are 1% as large as with a constant rate,
    # so the last 10 steps move the parameters far less than the constant-rate run's last 10
    def last_move(c):
        a = T.train(jax.random.key(4), targets, etas, mc, c, n_steps=60, progress=False).state.params
        b = T.train(jax.random.key(4), targets, etas, mc, c, n_steps=40, progress=False).state.params
        return sum(
            float(jnp.sum(jnp.abs(u - v)))
            for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
        )

    assert last_move(TINY._replace(decay_steps=40)) < 0.1 * last_move(TINY)


def test_compiles_once_whatever_the_number_of_minibatches(caplog):
    # and whatever the run's length sets (the decay's length, the moving average) and the learning rate:
    # they are traced, so only the config's structure (here: with or without a decay) compiles anew
    targets, etas, mc = _tiny_problem()
    decaying = TINY._replace(decay_steps=None, ema_decay=None)
    T.train(jax.random.key(0), targets, etas, mc, TINY, n_steps=20, progress=False)
    T.train(jax.random.key(0), targets, etas, mc, decaying, n_steps=20, progress=False)
    with compilations(caplog) as compiled:
        T.train(jax.random.key(1), targets, etas, mc, TINY, n_steps=100, progress=False)
        T.train(jax.random.key(1), targets, etas, mc, TINY._replace(learning_rate=2e-3), n_steps=40, progress=False)
        T.train(jax.random.key(1), targets, etas, mc, decaying, n_steps=120, progress=False)
    assert not any("_minibatch" in name for name in compiled), compiled


def test_nonfinite_loss_stops_and_keeps_checkpoint(tmp_path):
    targets, etas, mc = _tiny_problem()
    ck = str(tmp_path / "ck.npz")
    T.train(jax.random.key(0), targets, etas, mc, TINY, n_steps=20, checkpoint=ck, progress=False)
    huge = targets.at[0].multiply(1e30)  # finite particles whose squared distances overflow
    with pytest.raises(T.TrainingError, match="non-finite at step 1; no checkpoint was written"):
        T.train(jax.random.key(0), huge, etas, mc, TINY, n_steps=40, checkpoint=ck, resume=False, progress=False)
    state, *_ = T.load_checkpoint(ck)
    assert int(state.step) == 20  # the other run's checkpoint is left as it was


@pytest.mark.slow
@pytest.mark.parametrize("lr", [1e2, 1e8, 1e17])
def test_diverging_loss_stops_training(tmp_path, lr):
    # a finite but exploding loss (it used to "finish" at 1e32) is an error; no checkpoint of it
    targets, etas, mc = _tiny_problem()
    ck = str(tmp_path / "ck.npz")
    with pytest.raises(T.TrainingError, match="diverged|non-finite"):
        T.train(jax.random.key(0), targets, etas, mc, TINY._replace(learning_rate=lr), n_steps=200, checkpoint=ck)
    assert not os.path.exists(ck) or T.load_checkpoint(ck)[0].step < 200


def test_bad_input():
    targets, etas, mc = _tiny_problem()
    with pytest.raises(ValueError, match="eta"):
        T.train(jax.random.key(0), targets, etas[:2], mc, TINY, n_steps=20)
    with pytest.raises(ValueError, match="dimension"):
        T.train(jax.random.key(0), jnp.zeros((3, 64, 3)), etas, mc, TINY, n_steps=20)
    with pytest.raises(ValueError, match="n_samples"):
        T.train(jax.random.key(0), targets, etas, mc, TINY._replace(n_samples=65), n_steps=20)
    with pytest.raises(ValueError, match="n_steps"):
        T.train(jax.random.key(0), targets, etas, mc, TINY, n_steps=0)
    with pytest.raises(ValueError, match="ema_decay"):
        T.train(jax.random.key(0), targets, etas, mc, TINY._replace(ema_decay=1.0), n_steps=20)
    with pytest.raises(ValueError, match="decay_steps"):
        T.train(jax.random.key(0), targets, etas, mc, TINY._replace(decay_steps=-5), n_steps=20)
    with pytest.raises(ValueError, match="multiple"):
        T.train(jax.random.key(0), targets, etas, mc, TINY, n_steps=30)
    with pytest.raises(ValueError, match="renew_every"):
        T.train(jax.random.key(0), targets, etas, mc, TINY._replace(renew_every=7), n_steps=20)
    with pytest.raises(TypeError, match="debias"):
        T.train(jax.random.key(0), targets, etas, mc, TINY._replace(debias=1), n_steps=20)
    with pytest.raises(ValueError, match="positive"):
        M.make_config(2, [0.0, 1.0], eta_log=True)


@pytest.fixture(scope="module")
def shrinkage():
    """Two balls (radii 0.8 and 1.2 in 3D) learnt at N = 256 with the paper's loss and the debiased one."""
    scales = jnp.array([0.8, 1.2])
    targets = uniform_ball(jax.random.key(1), 2 * 2048, 3).reshape(2, 2048, 3) * scales[:, None, None]
    mc = M.make_config(3, scales, width=30, depth=3)
    n, steps = 256, 3000
    out = {}
    for debias in (False, True):
        cfg = T.TrainConfig.paper(
            n_samples=n, resample_every=50, renew_every=50, sweeps=4, initial_sweeps=20, learning_rate=3e-3,
            ema_decay=0.99, decay_steps=steps, debias=debias,
        )  # fmt: skip
        res = T.train(jax.random.key(2), targets, scales, mc, cfg, n_steps=steps, progress=False)
        gen = M.generate(jax.random.key(3), mc, res.params, scales, 20000)
        out[debias] = np.asarray(jnp.mean(jnp.sum(gen**2, -1), -1))
    # the effect size: the squared W2 between two independent N-samples of each ball (exact, 4 draws)
    floor = [
        np.mean([float(W.w2(*uniform_ball(jax.random.key(10 + r), 2 * n, 3).reshape(2, n, 3) * s, exact_max=512)[0])
                 ** 2 for r in range(4)])
        for s in scales
    ]  # fmt: skip
    return out, np.asarray(floor), 3 / 5 * np.asarray(scales) ** 2  # m2 of the ball of radius s in 3D


@pytest.mark.slow
def test_debiased_loss_removes_the_shrinkage(shrinkage):
    # The paper's loss fits the conditional mean of a noisy matching: the generated m2 falls short of
    # the target's by about one squared W2 floor of the mini-batch (here ~0.05-0.1 of m2 0.38-0.86).
    # m2 of 20000 generated points has SE sd(|x|^2)/sqrt(20000) < 0.002, far below floor/3.
    m2, floor, exact = shrinkage
    assert np.all(exact - m2[False] > 0.5 * floor), (m2[False], exact, floor)
    assert np.all(np.abs(m2[True] - exact) < floor / 3), (m2[True], exact, floor)


@pytest.mark.slow
@pytest.mark.parametrize("cap", ["shipped", "none"])
def test_debiased_loss_pulls_a_far_point_back(monkeypatch, cap):
    # A far point drawn once in f (case A) and once in f' (case B), as rare points are in training.
    # Without the cap its two radial forces cancel: A pulls it in with 2(R - a) - (R - b), B pushes
    # it out with (R - c) (a, b, c: projections of unit-disc points, |.| <= 1), so
    # |sum| <= 4 / N for every R and nothing stops it drifting away (the laminar2d-time runaway).
    # With the cap (4 max |y|^2 ~ 4 < (R - 1)^2) the self pairs carry no force: sum >= 2 (R - 1) / N.
    # Exact bounds from the geometry, for any matching (identity here), float32 round-off aside.
    if cap == "none":
        monkeypatch.setattr(T.losses, "SELF_CAP", np.inf)
    n, radius = 256, 10.0
    y, f, f_self = (uniform_ball(k, n, 2) for k in jax.random.split(jax.random.key(0), 3))
    out = jnp.array([radius, 0.0])
    ident = jnp.arange(n)

    def radial_force(fx, fs, which):
        g = jax.grad(lambda a, b: T.debiased_objective(a, b, y, ident, ident)[0], argnums=which)(fx, fs)
        return float(g[0, 0])  # d objective / d R at the far point (index 0, on the x axis)

    force = radial_force(f.at[0].set(out), f_self, 0) + radial_force(f, f_self.at[0].set(out), 1)
    if cap == "none":
        assert abs(force) <= 4 / n + 1e-6, force
    else:
        assert force >= 2 * (radius - 1) / n, force


@pytest.mark.slow
@pytest.mark.parametrize("local_cap", [0.0, 100.0])
def test_local_cap_pulls_back_a_stray_point_inside_the_extent_cap(local_cap):
    # The extent's cap (4 max |y|^2 ~ 4 for a unit disc) leaves a stray point at R = 2.5 free: its
    # self pairs cost at most (R + 1)^2 and at least (R - 1)^2 = 2.25 < 4 is not capped for most, so
    # the forces of cases A and B (as above) cancel to within 4 / N. The local cap, 100 times the
    # median self-pair cost of an optimal matching of two N = 1024 samples of the disc (about 4e-3:
    # a cap near 0.4, below the stray pairs' smallest cost 2.25, asserted), caps every pair of the
    # stray point: the force is then >= 2 (R - 1) / N.
    # Exact bounds from the geometry for any matching; float32 round-off aside.
    from scipy.optimize import linear_sum_assignment

    n, radius = 1024, 2.5
    y, f, f_self = (uniform_ball(k, n, 2) for k in jax.random.split(jax.random.key(1), 3))
    out = jnp.array([radius, 0.0])

    def optimal(a, b):
        cost = np.sum((np.asarray(a)[:, None] - np.asarray(b)[None]) ** 2, axis=-1)
        return jnp.asarray(linear_sum_assignment(cost)[1])

    def radial_force(fx, fs, which):
        perm, perm_self = optimal(fx, y), optimal(fx, fs)
        median = float(np.median(np.sum((np.asarray(fx) - np.asarray(fs)[np.asarray(perm_self)]) ** 2, -1)))
        assert local_cap * median < (radius - 1) ** 2
        objective = lambda a, b: T.debiased_objective(a, b, y, perm, perm_self, local_cap)[0]  # noqa: E731
        return float(jax.grad(objective, argnums=which)(fx, fs)[0, 0])

    force = radial_force(f.at[0].set(out), f_self, 0) + radial_force(f, f_self.at[0].set(out), 1)
    if local_cap:
        assert force >= 2 * (radius - 1) / n, force
    else:
        assert abs(force) <= 4 / n + 1e-6, force


def test_local_cap_needs_the_debiased_loss():
    targets, etas, mc = _tiny_problem()
    with pytest.raises(ValueError, match="local_cap"):
        T.check_inputs(mc, TINY._replace(local_cap=10.0), targets, etas)
    with pytest.raises(ValueError, match="local_cap"):
        T.check_inputs(mc, TINY._replace(debias=True, local_cap=-1.0), targets, etas)
    # every field is in the fingerprint: a run with another cap is another run
    fp = lambda cfg: T.fingerprint(jax.random.key(0), targets, etas, mc, cfg)  # noqa: E731
    assert fp(TINY._replace(debias=True, local_cap=100.0)) != fp(TINY._replace(debias=True))


def test_fresh_batch_loss_takes_the_first_step_of_each_minibatch():
    h = np.arange(100.0)  # 10 mini-batches of 10 steps: first steps 0, 10, ..., 90
    assert T.fresh_batch_loss(h, 10) == np.mean(np.arange(0, 100, 10))
    assert T.fresh_batch_loss(h, 10, n_batches=2) == 85.0
    with pytest.raises(ValueError, match="no whole mini-batch"):
        T.fresh_batch_loss(h[:5], 10)


def test_final_loss_is_the_mean_of_whole_minibatches_with_its_standard_error():
    h = np.repeat([5.0, 1.0, 2.0, 3.0, 4.0], 10)  # batch means 5, 1, 2, 3, 4; 3 steps of a 6th batch
    h = np.concatenate([h, [100.0, 100.0, 100.0]])
    est = T.final_loss(h, 10, n_batches=4)  # batches 1, 2, 3, 4: an unfinished batch is left out
    assert est.value == 2.5
    assert est.se == pytest.approx(np.std([1.0, 2.0, 3.0, 4.0], ddof=1) / 2.0, rel=1e-12)
    assert T.final_loss(h, 10).value == 3.0  # all 5 whole batches when fewer than 20
    with pytest.raises(ValueError, match="at least 2"):
        T.final_loss(h[:15], 10)


@pytest.mark.slow
@pytest.mark.parametrize("label", list(CHECKPOINT_DAMAGE))
def test_corrupt_checkpoints_are_named_errors(tmp_path, label):
    damage, match = CHECKPOINT_DAMAGE[label]
    targets, etas, mc = _tiny_problem()
    ck = str(tmp_path / "ck.npz")
    T.train(jax.random.key(0), targets, etas, mc, TINY, n_steps=20, checkpoint=ck, progress=False)
    damage(ck)
    with pytest.raises(T.CheckpointError, match=match) as info:
        T.load_checkpoint(ck)
    assert ck in str(info.value) and "train afresh" in str(info.value)
    with pytest.raises(T.CheckpointError):  # train names the same error instead of resuming
        T.train(jax.random.key(0), targets, etas, mc, TINY, n_steps=40, checkpoint=ck, progress=False)


def test_default_config_is_the_experiments_recipe_and_paper_is_the_papers():
    from ksdp.experiments import run
    from ksdp.experiments.specs import EXPERIMENTS, SCALES

    # laminar2d-amplitude at the quick scale changes nothing of the recipe: its TrainConfig is the default,
    # with the decay over the run resolved to its steps
    _, tc = run.configs(EXPERIMENTS["laminar2d-amplitude"], "quick")
    assert tc == T.TrainConfig().for_steps(SCALES["quick"].n_steps)
    # the paper's Sec. 3.4: N = 2000, K = 1000, L = 200, 10 sweeps (50 on a fresh batch), M = 16, Adam 1e-3,
    # eq. (14) (min-min, plain loss), constant rate, no moving average
    p = T.TrainConfig.paper()
    assert (p.n_samples, p.resample_every, p.renew_every, p.sweeps, p.initial_sweeps, p.block) == (
        2000,
        1000,
        200,
        10,
        50,
        16,
    )
    assert (p.learning_rate, p.ema_decay, p.decay_steps, p.debias, p.match_sources) == (1e-3, 0.0, 0, False, False)
    assert T.TrainConfig.paper(n_samples=64).n_samples == 64


@pytest.mark.slow
def test_decay_over_the_run_is_resolved_by_train(tmp_path):
    targets, etas, mc = _tiny_problem()
    cfg = T.TrainConfig(n_samples=16, resample_every=10, renew_every=10, sweeps=1, initial_sweeps=2, block=8)
    assert cfg.decay_steps is None
    with pytest.raises(ValueError, match="for_steps"):
        T.init_state(jax.random.key(0), mc, cfg, 3)
    ck = str(tmp_path / "ck.npz")
    res = T.train(jax.random.key(3), targets, etas, mc, cfg, n_steps=20, checkpoint=ck, progress=False)
    assert (
        T.load_checkpoint(ck)[2].decay_steps == 20 and res.generator.metadata["training"]["config"]["decay_steps"] == 20
    )
    # the moving average over a sixth of these 20 steps: 1 - 6 / 20
    assert res.generator.metadata["training"]["config"]["ema_decay"] == pytest.approx(0.7, abs=1e-12)
    # the same run with the steps written out is the same run (one fingerprint)
    again = T.train(
        jax.random.key(3), targets, etas, mc, cfg._replace(decay_steps=20, ema_decay=0.7), n_steps=20, checkpoint=ck
    )
    assert again.history == res.history


def test_default_moving_average_covers_a_sixth_of_the_run_at_most_1000_steps():
    from ksdp.training.config import check_config

    tc = T.TrainConfig()
    assert tc.ema_decay is None
    # the experiments' 0.999 from 6000 steps on (the quick scale's run and the paper's 50000): exactly
    assert tc.for_steps(6000).ema_decay == 0.999 and tc.for_steps(50_000).ema_decay == 0.999
    assert tc.for_steps(3000).ema_decay == pytest.approx(0.998, abs=1e-12)  # 500 steps
    assert tc.for_steps(6).ema_decay == 0.0  # a run too short to average
    assert tc._replace(ema_decay=0.5).for_steps(3000).ema_decay == 0.5  # an explicit value is kept
    for bad in (1.0, -0.1, True, "0.9"):
        with pytest.raises(ValueError, match="ema_decay"):
            check_config(tc._replace(ema_decay=bad))
