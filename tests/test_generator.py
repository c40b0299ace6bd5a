"""`ksdp.Generator`: the map composes with jit/vmap/grad and flax, its file round-trips bit for bit,
and every kind of damaged, foreign or old file is refused with a message that names what is wrong."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from damage import rewrite

import ksdp
from ksdp import generator as G
from ksdp import model as M
from ksdp import training as T

ETAS = [1.0, 10.0, 100.0]
CFG = M.make_config(2, ETAS, width=8, depth=2, eta_log=True)
# weights away from the initialisation (a trained map's are): perturbed by a fixed draw
PARAMS = jax.tree.map(lambda a: a + 0.1 * jnp.ones_like(a), M.init(jax.random.key(0), CFG))
GEN = ksdp.Generator(CFG, PARAMS, {"experiment": "test", "acceptance": [{"eta": 10.0, "passes": True}]})


def same_weights(a, b):
    return all(
        x.dtype == y.dtype and x.shape == y.shape and np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_call_is_the_map_and_composes():
    x = jax.random.normal(jax.random.key(1), (7, 2)) * 0.5
    want = M.apply(CFG, PARAMS, x, jnp.array([10.0]))
    # the same computation: equal to the last bit on one device
    np.testing.assert_array_equal(GEN(x, 10.0), want)
    # under jit, with eta a compile-time constant: XLA may fold the normalisation differently, a few
    # float32 ulps (outputs are O(1): 1e-6 absolute)
    np.testing.assert_allclose(jax.jit(lambda g, x: g(x, 10.0))(GEN, x), want, rtol=0, atol=1e-6)
    # vmap over single points equals the batched call (float32 round-off of one matmul order: 1e-6)
    np.testing.assert_allclose(jax.vmap(GEN, in_axes=(0, None))(x, 10.0), want, atol=1e-6)
    # grad with respect to a point is the Jacobian's column sum, as jacfwd gives it
    jac = jax.jacfwd(lambda p: GEN(p, 10.0))(x[0])
    np.testing.assert_allclose(jax.grad(lambda p: GEN(p, 10.0).sum())(x[0]), jac.sum(0), rtol=1e-5, atol=1e-6)
    # grad with respect to the weights flows through the pytree
    grads = jax.grad(lambda g: jnp.sum(g(x, 10.0) ** 2))(GEN)
    assert isinstance(grads, ksdp.Generator) and all(np.all(np.isfinite(a)) for a in jax.tree.leaves(grads))
    with pytest.raises(ValueError, match="space dimension"):
        GEN(jnp.zeros((3, 3)), 10.0)


def test_module_inside_a_larger_flax_model():
    class Bigger(nn.Module):
        @nn.compact
        def __call__(self, x, eta):
            return 2.0 * M.DeepParticleMap(CFG, name="map")(x, eta) + nn.Dense(2)(x)

    x = jnp.ones((4, 2)) * 0.3
    variables = Bigger().init(jax.random.key(0), x, jnp.array([10.0]))
    variables = {"params": {**variables["params"], "map": GEN.params["params"]}}
    out = Bigger().apply(variables, x, jnp.array([10.0]))
    dense = variables["params"]["Dense_0"]
    np.testing.assert_allclose(out, 2.0 * GEN(x, 10.0) + x @ dense["kernel"] + dense["bias"], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(GEN.module.apply(GEN.params, x, jnp.array([10.0])), GEN(x, 10.0))


def test_sample_key_first_any_n():
    a = GEN.sample(jax.random.key(3), 10.0, 1001, chunk=100)
    np.testing.assert_array_equal(a, M.generate(jax.random.key(3), CFG, PARAMS, 10.0, 1001, chunk=100))
    assert a.shape == (1001, 2) and np.all(np.isfinite(a))
    assert GEN.sample(jax.random.key(3), [1.0, 100.0], 10).shape == (2, 10, 2)


def test_save_load_round_trip_bit_for_bit(tmp_path):
    path = tmp_path / "g.npz"
    GEN.save(path)
    back = ksdp.load_generator(path)
    assert back.config == CFG and back.metadata == GEN.metadata
    assert same_weights(back.params, PARAMS)
    # weights keyed by their path in the tree, no optimiser state, the format named
    with np.load(path) as z:
        names = set(z.files)
        meta = json.loads(str(z["meta_json"]))
    assert names == {
        "meta_json",
        "params/Dense_0/kernel",
        "params/Dense_0/bias",
        "params/Dense_1/kernel",
        "params/Dense_1/bias",
        "params/Dense_2/kernel",
        "params/Dense_2/bias",
    }
    assert meta["format"] == G.GENERATOR_FORMAT


def test_fourier_features_round_trip(tmp_path):
    # the Fourier inputs (sin, cos of pi 2^k x, k < 3, per coordinate) join x and eta: 2 + 12 + 1 inputs
    cfg = M.make_config(2, ETAS, width=8, depth=2, eta_log=True, fourier=3)
    gen = ksdp.Generator(cfg, M.init(jax.random.key(0), cfg))
    assert gen.params["params"]["Dense_0"]["kernel"].shape == (15, 8)
    gen.save(tmp_path / "f.npz")
    back = ksdp.load_generator(tmp_path / "f.npz")
    assert back.config.fourier == 3 and same_weights(back.params, gen.params)


def test_proportional_head_is_two_heads_and_round_trips(tmp_path):
    # x + MLP_0 + (eta / eta_max) MLP_1, eta_max = 100 (the largest training value): the last layer has
    # 2d outputs; at eta = 100 the map adds both heads, at eta = 50 half the second (float32 round-off of
    # a sum of O(1) terms: 1e-6)
    cfg = M.make_config(2, ETAS, width=8, depth=2, eta_log=True, proportional=True)
    assert M.eta_max(cfg) == pytest.approx(100.0)
    gen = ksdp.Generator(cfg, jax.tree.map(lambda a: a + 0.1, M.init(jax.random.key(0), cfg)))
    last = gen.params["params"]["Dense_2"]
    assert last["kernel"].shape == (8, 4)
    x = jax.random.normal(jax.random.key(1), (5, 2)) * 0.5
    for eta in (100.0, 50.0):
        e = M.normalise_eta(cfg, jnp.array([eta]))
        h = jnp.concatenate([x, jnp.broadcast_to(e, (5, 1))], -1)
        for k in range(2):
            layer = gen.params["params"][f"Dense_{k}"]
            h = jnp.tanh(h @ layer["kernel"] + layer["bias"])
        out = h @ last["kernel"] + last["bias"]
        want = x + out[:, :2] + (eta / 100.0) * out[:, 2:]
        np.testing.assert_allclose(gen(x, eta), want, rtol=1e-5, atol=1e-6)
    gen.save(tmp_path / "p.npz")
    back = ksdp.load_generator(tmp_path / "p.npz")
    assert back.config.proportional and same_weights(back.params, gen.params)


def test_constructor_checks():
    with pytest.raises(TypeError, match="config"):
        ksdp.Generator({"d": 2}, PARAMS)
    with pytest.raises(ValueError, match="do not fit"):
        ksdp.Generator(CFG._replace(width=9), PARAMS)
    with pytest.raises(TypeError, match="JSON"):
        ksdp.Generator(CFG, PARAMS, {"x": object()})
    with pytest.raises(TypeError, match="metadata"):
        ksdp.Generator(CFG, PARAMS, ["not", "a", "dict"])


def _meta(**kw):
    def change(arrays):
        meta = json.loads(str(arrays["meta_json"]))
        meta.update(kw)
        arrays["meta_json"] = np.asarray(json.dumps(meta))

    return change


def _truncate(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def _flip_bytes(path):
    # corrupt the middle of the file (inside a stored array): the zip CRC or the array header fails
    data = bytearray(open(path, "rb").read())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(64)
    open(path, "wb").write(bytes(data))


DAMAGE = {
    "truncated": (_truncate, "not a readable .npz"),
    "corrupted bytes": (_flip_bytes, "not a readable .npz"),
    "not a zip": (lambda p: open(p, "w").write("hello"), "not a readable .npz"),
    "foreign npz": (lambda p: np.savez(p, a=np.zeros(3)), "no metadata"),
    "foreign format": (lambda p: rewrite(p, _meta(format="someone-else/3")), "not a ksdp generator"),
    "old format": (
        lambda p: rewrite(p, _meta(format="ksdp-generator/0")),
        "format 'ksdp-generator/0'.*reads ksdp-generator/1",
    ),
    "newer format": (lambda p: rewrite(p, _meta(format="ksdp-generator/9")), "this version of ksdp reads"),
    "checkpoint format": (lambda p: rewrite(p, _meta(format=T.CHECKPOINT_FORMAT)), "training checkpoint"),
    "NaN weight": (
        lambda p: rewrite(p, lambda a: a.__setitem__("params/Dense_0/bias", a["params/Dense_0/bias"] * np.nan)),
        "NaN or inf",
    ),
    "float64 weight": (
        lambda p: rewrite(
            p, lambda a: a.__setitem__("params/Dense_0/bias", a["params/Dense_0/bias"].astype(np.float64))
        ),
        "expects float32",
    ),
    "misshapen weight": (
        lambda p: rewrite(p, lambda a: a.__setitem__("params/Dense_0/bias", np.zeros(9, np.float32))),
        "expects",
    ),
    "huge member": (
        lambda p: rewrite(p, lambda a: a.__setitem__("params/Dense_0/bias", np.zeros(10**6, np.float32))),
        "bytes",
    ),
    "missing weight": (lambda p: rewrite(p, lambda a: a.pop("params/Dense_1/kernel")), "missing"),
    "extra array": (lambda p: rewrite(p, lambda a: a.__setitem__("opt_state", np.zeros(3))), "does not have"),
    "config width -1": (lambda p: rewrite(p, _meta(model={**CFG.to_dict(), "width": -1})), "width"),
    "config unknown activation": (
        lambda p: rewrite(p, _meta(model={**CFG.to_dict(), "activation": "sin"})),
        "activation",
    ),
    "config missing": (lambda p: rewrite(p, _meta(model=None)), "malformed"),
    "metadata a list": (lambda p: rewrite(p, _meta(metadata=[1])), "malformed"),
}


@pytest.mark.parametrize("label", DAMAGE)
def test_damaged_files_are_refused_clearly(tmp_path, label):
    path = str(tmp_path / "g.npz")
    GEN.save(path)
    damage, match = DAMAGE[label]
    damage(path)
    with pytest.raises(ksdp.GeneratorFileError, match=match) as err:
        ksdp.load_generator(path)
    assert path in str(err.value)  # the message names the file


@pytest.mark.slow
def test_a_training_checkpoint_is_named_as_such(tmp_path):
    # a real checkpoint, read as a generator: refused with the door that reads it; that door gives the
    # weights `train` returned
    targets = jax.random.normal(jax.random.key(0), (2, 64, 2))
    mc = M.make_config(2, [0.0, 1.0], width=8, depth=2)
    tiny = T.TrainConfig.paper(n_samples=16, resample_every=10, renew_every=5, sweeps=1, initial_sweeps=2, block=8)
    ck = str(tmp_path / "ck.npz")
    res = T.train(jax.random.key(1), targets, [0.0, 1.0], mc, tiny, n_steps=10, checkpoint=ck, progress=False)
    with pytest.raises(ksdp.GeneratorFileError, match="generator_from_checkpoint"):
        ksdp.load_generator(ck)
    from_ck = T.generator_from_checkpoint(ck)
    assert from_ck.config == res.generator.config and same_weights(from_ck.params, res.generator.params)
    meta = res.generator.metadata
    assert meta["training"]["eta"] == [[0.0], [1.0]] and meta["training"]["particles"] == 64
    assert meta["training"]["steps"] == 10 and meta["manifest"]["ksdp"] == ksdp.__version__


def test_pretrained_lists_and_refuses_unknown_names():
    names = ksdp.pretrained()
    assert names == sorted(names) and all(isinstance(n, str) for n in names)
    assert set(names) == {f[:-4] for f in os.listdir(G.PRETRAINED_DIR) if f.endswith(".npz")}
    with pytest.raises(ValueError, match="no pretrained generator named 'nope'"):
        ksdp.pretrained("nope")
    with pytest.raises(TypeError, match="name"):
        ksdp.pretrained(3)
