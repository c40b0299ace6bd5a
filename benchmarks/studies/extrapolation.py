"""What makes the map follow the physics past its training range (docs/training.md, "Beyond the range").

* ``extrapolation``: each experiment's network retrained on its quick-scale pool (simulated, or reused
  from ``<out>/quick/<experiment>/``) with one change at a time to how ``eta`` enters the network or how
  the map is parametrised, one seed each, judged at every value by the second moment against the mean
  of the 13 independent IPM runs (three replicas and ten reference runs) and the energy distance's z
  against its floor, and at the held-out and extrapolated values by the C2ST excess over pairs of runs
  (`ksdp.metrics.c2st_pairs`). The acceptance the issue asks beyond the range: m2 within 10% and a C2ST
  excess of at most 0.05. Each trained network is kept as a generator file under
  ``<out>/ablations/extrapolation/`` and reused when the study runs again.

The changes (each where it applies):

* ``eta linear``: the amplitude fed as ``A``, not ``log10 A`` (normalised over the training range);
* ``identity at 0, eta linear``: the map ``x + (A / scale) MLP(x, A)``, whose residual grows linearly with
  the amplitude past the range, as the flow's displacement does (at ``A = 0`` it is the identity, which
  the no-flow law at the experiment's time is not: the network must undo the factor at small ``A``); for a
  time experiment without it, the identity at ``t = 0``, where the law is the source itself;
* ``gelu``: smooth activations that grow linearly instead of saturating like ``tanh``;
* ``identity at 0, eta linear, gelu``: the two together.
"""

from __future__ import annotations

import math
import os
import time

import jax
import numpy as np

import ksdp
from benchmarks.studies.runs import slug
from benchmarks.studies.structure import independent_runs, value_kind
from ksdp import metrics as KM
from ksdp import model as M
from ksdp import training as T
from ksdp.experiments import ipm_data as DATA
from ksdp.experiments import run as RUN
from ksdp.experiments.specs import EXPERIMENTS

NAMES = ("laminar2d-amplitude", "laminar3d-amplitude", "laminar2d-time", "ks2d-time")


def _model(exp, scale, **changes):
    """The experiment's `ModelConfig` (as `ksdp.experiments.run.configs` makes it) with ``changes``."""
    sc = DATA.scale_of(exp, scale)
    kwargs = dict(
        width=sc.width,
        depth=sc.depth,
        eta_log=exp.log_eta,
        tail_feature=exp.tail_feature,
        identity_at=exp.identity_at,
    )
    return M.make_config(exp.d, exp.values(scale)[0], **{**kwargs, **changes})


# label -> (applies to the experiment, ModelConfig changes)
VARIANTS = {
    "recipe": (lambda exp: True, {}),
    "eta linear": (lambda exp: exp.log_eta, {"eta_log": False}),
    "identity at 0, eta linear": (lambda exp: exp.identity_at is None, {"eta_log": False, "identity_at": 0.0}),
    "gelu": (lambda exp: True, {"activation": "gelu"}),
    # the two that helped laminar2d-amplitude most, together
    "identity at 0, eta linear, gelu": (
        lambda exp: exp.identity_at is None,
        {"eta_log": False, "identity_at": 0.0, "activation": "gelu"},
    ),
}


def extrapolation(out="ksdp-runs", names=None, variants=None, seed=0, scale="quick"):
    rows = []
    for name in names or NAMES:
        exp = EXPERIMENTS[name]
        folder = os.path.join(out, scale, name)
        parts, pool, ref = independent_runs(exp, scale, folder)
        others = np.concatenate([parts, ref])  # [13, V, J, d]
        sc = DATA.scale_of(exp, scale)
        train_v = exp.values(scale)[0]
        values = exp.all_values(scale)
        targets = pool.swapaxes(0, 1).reshape(len(train_v), -1, exp.d)
        _, tc = RUN.configs(exp, scale)
        for label in variants or list(VARIANTS):
            applies, changes = VARIANTS[label]
            if not applies(exp):
                continue
            mc = _model(exp, scale, **changes)
            path = os.path.join(out, "ablations", "extrapolation", scale, name, f"{slug(label)}-seed{seed}.npz")
            t0 = time.perf_counter()
            if os.path.exists(path):
                gen = ksdp.load_generator(path)
            else:
                res = T.train(jax.random.key(100 + seed), targets, train_v, mc, tc, n_steps=sc.n_steps, progress=False)
                gen = res.generator.with_metadata(variant=label, seed=seed)
                gen.save(path)
            seconds = time.perf_counter() - t0
            for i, v in enumerate(values):
                kind = value_kind(exp, scale, v)
                x = np.asarray(gen.sample(jax.random.fold_in(jax.random.key(7), i), float(v), sc.n_generated))
                energy = KM.energy_distance(x, parts[1, i])
                floor = KM.energy_distance(parts[2, i], parts[1, i])
                m2_runs = np.mean(np.sum(others[:, i].astype(np.float64) ** 2, -1), axis=-1)  # [13]
                m2_dp = float(np.mean(np.sum(x.astype(np.float64) ** 2, -1)))
                row = {
                    "experiment": name,
                    "variant": label,
                    "seed": seed,
                    "eta": float(v),
                    "kind": kind,
                    "train_s": seconds,
                    "energy_z": (energy.value - floor.value) / math.hypot(energy.se, floor.se),
                    "m2_dp": m2_dp,
                    "m2_ipm": float(np.mean(m2_runs)),
                    "m2_ipm_se": float(np.std(m2_runs, ddof=1) / math.sqrt(len(m2_runs))),
                    "m2_rel_error": (m2_dp - float(np.mean(m2_runs))) / float(np.mean(m2_runs)),
                }
                if kind != "train":
                    c2st = KM.c2st_pairs(jax.random.key(11), x, others[:, i], steps=sc.c2st_steps)
                    row.update(c2st_excess=c2st["excess"], c2st_excess_se=c2st["excess_se"])
                rows.append(row)
                c2st_text = f", C2ST excess {row['c2st_excess']:+.3f}" if "c2st_excess" in row else ""
                print(
                    f"extrapolation {name} {label:>26} {kind:>12} {v:g}: m2 {row['m2_rel_error']:+.3f}, "
                    f"energy z {row['energy_z']:.1f}{c2st_text}",
                    flush=True,
                )
    return rows
