"""The IPM against the PDE reference (docs/reference.md): ``reference``, the paper's 2D case against
``ksdp.reference``: the blow-up time of the unregularised model on three grids; the radial KS distance
of the IPM (``--reference-sizes``) to the blob mean field (the particle error) and of the mean field to
the unregularised model (the regularisation error), next to the KS sampling floor ~0.87 / sqrt(J)."""

from __future__ import annotations

import math
import time

import jax
import numpy as np

import ksdp
from ksdp import metrics as KM
from ksdp import reference as REF


def reference(sizes=(2000, 10000)):
    times = (0.0125, 0.025, 0.05, 0.075, 0.0875, 0.1)
    blow = {n: REF.blowup_time(n_grid=n, t_max=0.2) for n in (750, 1500, 3000)}
    print(
        "reference: blow-up time of the unregularised model on 750/1500/3000 cells: "
        + ", ".join(f"{t:.5f}" for t in blow.values()),
        flush=True,
    )
    delta = ksdp.ipm.DEFAULT_DELTA
    blob = REF.solve_radial(times, delta=delta)
    exact = REF.solve_radial(times)  # stops at the blow-up: fewer snapshots
    m2_blob, m2_exact = blob.second_moment(), exact.second_moment()
    rows = []
    for i, t in enumerate(times):
        row = {"t": t, "m2_blob": float(m2_blob[i])}
        if i < len(exact.times):
            # KS between two CDFs: the sup over a fine grid of radii
            r = np.linspace(0, blob.r[-1], 200001)
            row["m2_unregularised"] = float(m2_exact[i])
            row["ks_blob_vs_unregularised"] = float(np.max(np.abs(blob.cdf(i)(r) - exact.cdf(i)(r))))
        rows.append(row)
    drifts = {}
    for n in sizes:
        drifts[n] = ksdp.drifts.resolve_drift("auto", None, n, 2, "blob")[0]  # the particle mesh from J = 10^4
        t0 = time.perf_counter()
        traj = ksdp.simulate(jax.random.key(7), ksdp.Params(delta=delta), times, n_particles=n)
        print(f"reference: IPM J = {n} ({drifts[n]} drift) in {time.perf_counter() - t0:.0f} s", flush=True)
        x = np.asarray(traj.particles, np.float64)
        for i, row in enumerate(rows):
            row[f"m2_ipm_J{n}"] = float(np.mean(np.sum(x[i] ** 2, -1)))
            row[f"ks_ipm_vs_blob_J{n}"] = KM.radial_ks(x[i], blob.cdf(i))
            row[f"ks_floor_J{n}"] = 0.8687 / math.sqrt(n)  # the mean of sqrt(n) KS under the null
    for row in rows:
        print("reference " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()), flush=True)
    return {
        "blowup_time": {str(k): v for k, v in blow.items()},
        "delta": delta,
        "drift": {str(n): v for n, v in drifts.items()},
        "rows": rows,
    }
