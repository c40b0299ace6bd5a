"""Block descent (docs/transport.md).

* ``blocks``: the gap to SciPy's optimum after 200 sweeps from the identity (N = 2000, M = 16), 2D and
  3D, alternating random and spatially local blocks against random blocks only.
* ``small``: 60 random problems with N in [5, 64]: how often block descent alone (1000 sweeps, M = 16)
  ends above SciPy's optimum, and by how much.
"""

from __future__ import annotations

import jax
import numpy as np

from benchmarks.transport import exact_optimum
from ksdp import transport as TR


def _random_only(key, x, y, n_sweeps, block):
    def body(p, k):
        return TR.block_sweep(k, x, y, p, False, block=block), None

    return jax.lax.scan(body, TR.identity(x), jax.random.split(key, n_sweeps))[0]


def blocks():
    rows = []
    for d in (2, 3):
        x = jax.random.uniform(jax.random.key(d), (2000, d)) * 2 - 1
        y = jax.random.normal(jax.random.key(d + 10), (2000, d)) * 0.5 + 0.2
        c, opt = exact_optimum(x, y)
        alt = jax.jit(lambda k: TR.refine(k, x, y, TR.identity(x), n_sweeps=200, block=16)[0])(jax.random.key(0))
        rnd = jax.jit(lambda k: _random_only(k, x, y, 200, 16))(jax.random.key(0))
        for name, p in (("random+local", alt), ("random only", rnd)):
            gap = c[np.arange(2000), np.asarray(p)].mean() / opt - 1
            rows.append({"d": d, "blocks": name, "sweeps": 200, "gap": gap})
            print(f"blocks d={d} {name:>12}: {100 * gap:.2f}% above the optimum after 200 sweeps", flush=True)
    return rows


def small():
    misses, gaps, total = 0, [], 0
    for i in range(60):
        d = 2 + i % 2
        n = int(np.random.default_rng(i).integers(5, 65))
        x = jax.random.normal(jax.random.key(1000 + i), (n, d))
        y = jax.random.normal(jax.random.key(2000 + i), (n, d)) * 0.7 + 0.3
        c, opt = exact_optimum(x, y)
        perm = TR.refine(jax.random.key(i), x, y, TR.identity(x), n_sweeps=1000, block=16)[0]
        gap = c[np.arange(n), np.asarray(perm)].mean() / opt - 1
        total += 1
        if gap > 1e-6:
            misses += 1
            gaps.append(gap)
    row = {"problems": total, "missed": misses, "max_gap": max(gaps, default=0.0)}
    print(
        f"small  block descent alone stopped above the optimum in {misses} of {total} problems "
        f"(largest gap {100 * row['max_gap']:.2f}%)",
        flush=True,
    )
    return [row]
