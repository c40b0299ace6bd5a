"""Kinds of damaged checkpoint, shared by the loader's tests and the CLI's recovery tests."""

import json

import numpy as np


def rewrite(path, change):
    """Rewrites the npz at ``path`` with ``change(arrays)`` applied to its members."""
    with np.load(path, allow_pickle=False) as z:
        arrays = dict(z.items())
    change(arrays)
    np.savez(path, **arrays)


def _meta(arrays, **kw):
    meta = json.loads(str(arrays["meta_json"]))
    meta.update(kw)
    arrays["meta_json"] = np.asarray(json.dumps(meta))


def _field(arrays, name):
    return json.loads(str(arrays["meta_json"]))[name]


def _truncate(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def _not_a_permutation(arrays):
    # the matchings: the one int32 leaf of rank >= 2 ([R, N], or [R, 2, N] with the debiased loss)
    leaf = next(k for k, a in arrays.items() if k.startswith("leaf_") and a.dtype == np.int32 and a.ndim >= 2)
    arrays[leaf] = np.zeros_like(arrays[leaf])


# label -> (damage(path), what the CheckpointError says)
CHECKPOINT_DAMAGE = {
    "truncated file": (_truncate, "not a readable .npz"),
    "not a zip": (lambda p: open(p, "w").write("not a checkpoint"), "not a readable .npz"),
    "NaN weights": (lambda p: rewrite(p, lambda a: a.__setitem__("leaf_0000", a["leaf_0000"] * np.nan)), "NaN or inf"),
    "integer weights": (
        lambda p: rewrite(p, lambda a: a.__setitem__("leaf_0000", a["leaf_0000"].astype(np.int32))),
        "dtype",
    ),
    "step 10^9 + 20": (lambda p: rewrite(p, lambda a: _meta(a, step=10**9 + 20)), "step"),
    "step -20": (lambda p: rewrite(p, lambda a: _meta(a, step=-20)), "step"),
    "metadata without the model": (lambda p: rewrite(p, lambda a: _meta(a, model=None)), "metadata"),
    "foreign format": (lambda p: rewrite(p, lambda a: _meta(a, format="other")), "not a ksdp checkpoint"),
    "ema_decay 2": (
        lambda p: rewrite(p, lambda a: _meta(a, train={**_field(a, "train"), "ema_decay": 2.0})),
        "ema_decay",
    ),
    "learning rate -1": (
        lambda p: rewrite(p, lambda a: _meta(a, train={**_field(a, "train"), "learning_rate": -1.0})),
        "learning_rate",
    ),
    "block 1": (lambda p: rewrite(p, lambda a: _meta(a, train={**_field(a, "train"), "block": 1})), "block"),
    "width 0": (lambda p: rewrite(p, lambda a: _meta(a, model={**_field(a, "model"), "width": 0})), "width"),
    "old format": (lambda p: rewrite(p, lambda a: _meta(a, format="ksdp-checkpoint/2")), "this version of ksdp reads"),
    "missing member": (lambda p: rewrite(p, lambda a: a.pop("leaf_0001")), "missing"),
    "history too long": (
        lambda p: rewrite(p, lambda a: a.__setitem__("history", np.zeros(10**6, np.float32))),
        "bytes",
    ),
    "perm not a permutation": (lambda p: rewrite(p, _not_a_permutation), "permutation"),
}
