"""Conventions of the public API (issue: the learnt map as a product)."""

import importlib
import inspect
import pkgutil

import pytest

import ksdp


def _public_functions():
    names = ["ksdp"] + ["ksdp." + m.name for m in pkgutil.walk_packages(ksdp.__path__)]
    for module_name in names:
        module = importlib.import_module(module_name)
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module_name:
                continue
            if inspect.isfunction(obj):
                yield f"{module_name}.{name}", obj
            elif inspect.isclass(obj):
                for meth_name, meth in vars(obj).items():
                    if not meth_name.startswith("_") and inspect.isfunction(meth):
                        yield f"{module_name}.{name}.{meth_name}", meth


def test_every_random_key_comes_first():
    # JAX's convention (jax.random.normal(key, shape)): a function that draws randomness takes its key
    # first; a key that only seeds a deterministic algorithm's order is keyword-only (ksdp.w2)
    wrong = []
    for name, fn in _public_functions():
        params = [p for p in inspect.signature(fn).parameters.values() if p.name not in ("self", "cls")]
        for i, p in enumerate(params):
            if p.name in ("key", "keys") and i != 0 and p.kind != p.KEYWORD_ONLY:
                wrong.append(f"{name}: {[q.name for q in params]}")
    assert not wrong, wrong


@pytest.mark.slow
def test_the_transformations_the_api_page_claims():
    # docs/api.md's table: the doors it marks "yes" trace under jit, vmap and grad (small sizes; each
    # result finite). Generator.__call__ is checked in tests/test_generator.py.
    import jax
    import jax.numpy as jnp
    import numpy as np

    key = jax.random.key(0)

    def sim(mu):
        return ksdp.simulate(key, ksdp.Params(mu=mu), times=(0.001,), n_particles=16).particles

    x = ksdp.uniform_ball(key, 16, 2)
    outs = [
        jax.jit(sim)(1.0),
        jax.vmap(sim)(jnp.array([1.0, 2.0])),
        jax.grad(lambda mu: sim(mu).sum())(1.0),
        jax.jit(lambda a: ksdp.sweep(key, ksdp.Params(mu=a), times=(0.001,), n_particles=16).particles)(
            jnp.array([1.0, 2.0])
        ),
        jax.grad(lambda a: ksdp.velocity(a, ksdp.Params()).sum())(x),
        jax.vmap(lambda a: ksdp.velocity(a, ksdp.Params()))(jnp.stack([x, x])),
        jax.grad(ksdp.second_moment)(x),
        jax.jit(lambda a, b: ksdp.w2(a, b).w2)(x, x + 0.1),
        jax.grad(lambda a: ksdp.w2(a, x).w2)(x + 0.1),
    ]
    assert all(np.all(np.isfinite(np.asarray(o))) for o in outs)
