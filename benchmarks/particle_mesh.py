"""The particle-mesh drift against the direct drift: accuracy on the paper's states, cost against J.

    python -m benchmarks.particle_mesh [--only states accuracy timing runs] [--quick]

Four parts, all in one run (so every ratio compares like with like on one machine):

* ``states``: the paper's states at J = 10^4 simulated with the direct drift (the uniform ball;
  ks2d-time at t = 0.075; laminar2d at A = 100, t = 0.1; laminar3d at A = 100, t = 0.02;
  kolmogorov3d at A = 100, t = 0.1), cached in ``--cache``.
* ``accuracy``: on each state, the relative L2 error of the particle-mesh drift against the direct
  one for a range of grids, with the largest cell in units of delta and the time of one drift.
* ``statistics``: at the states' J, a particle-mesh run and a second direct run (other keys)
  against the cached direct run: energy distance and m2 with standard errors (the second direct
  run is the floor).
* ``timing``: one drift against J for both (the direct one measured up to ``--direct-max`` and
  extrapolated beyond from its measured J^2 cost, labelled as such), and the crossover J.
* ``runs``: whole simulations with the particle mesh at the issue's sizes (J = 10^6 in 2D: ks2d to
  t = 0.1 and laminar2d at A = 100 to t = 0.1; J = 10^6 laminar3d at A = 100 to t = 0.02; J = 10^5
  kolmogorov3d at A = 100 to t = 0.1), wall time against the direct drift's extrapolated time,
  the grid spacing reached and whether the checked run accepts it.

Prints tables and writes ``results/particle-mesh-<device>-<date>.json`` and a figure beside it.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import ksdp
from benchmarks import _common
from ksdp import ipm
from ksdp import particle_mesh as pm

DELTA = ipm.DEFAULT_DELTA
# name: (d, flow, amplitude, time); the states of the issue, simulated with the experiments' settings
STATES = {
    "ball-2d": (2, None, 0.0, 0.0),
    "ks2d t=0.075": (2, None, 0.0, 0.075),
    "laminar2d A=100 t=0.1": (2, "laminar2d", 100.0, 0.1),
    "ball-3d": (3, None, 0.0, 0.0),
    "laminar3d A=100 t=0.02": (3, "laminar3d", 100.0, 0.02),
    "kolmogorov3d A=100 t=0.1": (3, "kolmogorov3d", 100.0, 0.1),
}
GRIDS = {2: (128, 256, 512, 1024), 3: (32, 64, 128, 192)}
RUNS = [  # (name, d, flow, amplitude, end time, J)
    ("ks2d to t=0.1", 2, None, 0.0, 0.1, 10**6),
    ("laminar2d A=100 to t=0.1", 2, "laminar2d", 100.0, 0.1, 10**6),
    ("laminar3d A=100 to t=0.02", 3, "laminar3d", 100.0, 0.02, 10**6),
    ("kolmogorov3d A=100 to t=0.1", 3, "kolmogorov3d", 100.0, 0.1, 10**5),
]


def make_states(n: int, cache: str) -> dict:
    """``name -> [n, d]`` positions, simulated with the direct drift (or read from ``cache``)."""
    if os.path.exists(cache):
        with np.load(cache) as f:
            if all(name in f.files for name in STATES) and all(f[name].shape[0] == n for name in STATES):
                print(f"states: reusing {cache}")
                return {name: jnp.asarray(f[name]) for name in STATES}
    states = {}
    for i, (name, (d, flow, amp, t)) in enumerate(STATES.items()):
        t0 = time.perf_counter()
        traj = ksdp.simulate(
            jax.random.key(100 + i),
            ksdp.Params(delta=DELTA, flow=amp),
            times=(t,),
            n_particles=n,
            d=d,
            flow=flow,
            drift="direct",
        )
        states[name] = traj.particles[-1]
        print(f"states: {name} (J = {n}) in {time.perf_counter() - t0:.0f} s", flush=True)
    from ksdp._io import atomic_write

    atomic_write(cache, lambda f: np.savez(f, **{k: np.asarray(v) for k, v in states.items()}))
    return states


STATISTICS = ("ks2d t=0.075", "laminar2d A=100 t=0.1", "laminar3d A=100 t=0.02")


def statistics(states: dict, names=STATISTICS) -> list:
    """Fast against direct runs at the states' J, judged against two direct runs (the floor).

    For each state: a second direct run and a particle-mesh run (other keys) of the same size;
    the energy distance of each to the cached direct run, and the m2 differences, with standard errors.
    """
    from ksdp import metrics

    rows = []
    print(
        f"\n{'state':>26} {'energy(pm, direct)':>22} {'energy(direct, direct)':>24} {'z':>5} "
        f"{'m2 pm':>8} {'m2 direct':>10}"
    )
    for name in names:
        d, flow, amp, t = STATES[name]
        x_ref = np.asarray(states[name])
        kwargs = dict(times=(t,), n_particles=x_ref.shape[0], d=d, flow=flow)
        params = ksdp.Params(delta=DELTA, flow=amp)
        i = list(STATES).index(name)
        x_direct = np.asarray(ksdp.simulate(jax.random.key(200 + i), params, drift="direct", **kwargs).particles[-1])
        traj = ksdp.simulate(jax.random.key(300 + i), params, drift="pm", check=False, **kwargs)
        x_pm = np.asarray(traj.particles[-1])
        e_pm = metrics.energy_distance(x_pm, x_ref)
        e_floor = metrics.energy_distance(x_direct, x_ref)
        m = {k: metrics.moments(v) for k, v in (("pm", x_pm), ("direct", x_direct), ("ref", x_ref))}
        z = (e_pm.value - e_floor.value) / float(np.hypot(e_pm.se, e_floor.se))
        row = {
            "state": name,
            "J": int(x_ref.shape[0]),
            "grid_spacing": float(traj.grid_spacing),
            "energy_pm": [e_pm.value, e_pm.se],
            "energy_floor": [e_floor.value, e_floor.se],
            "energy_z": z,
            "m2": {k: [v["m2"], v["m2_se"]] for k, v in m.items()},
        }
        rows.append(row)
        print(
            f"{name:>26} {e_pm.value:>12.2e} +- {e_pm.se:.1e} {e_floor.value:>14.2e} +- {e_floor.se:.1e} {z:>5.1f} "
            f"{m['pm']['m2']:>8.4f} {m['direct']['m2']:>10.4f} "
            f"(cached direct {m['ref']['m2']:.4f} +- {m['ref']['m2_se']:.4f})",
            flush=True,
        )
    return rows


def accuracy(states: dict, grids: dict) -> list:
    rows = []
    print(f"\n{'state':>26} {'grid':>5} {'h/delta':>8} {'rel L2 error':>13} {'pm s':>8} {'direct s':>9}")
    for name, x in states.items():
        d = x.shape[1]
        direct = jax.jit(lambda y: ipm.pair_sum(y, y, DELTA))
        exact = direct(x)
        t_direct = _common.timeit(lambda: direct(x).block_until_ready(), repeat=2, min_time=0.1)
        for g in grids[d]:
            f = jax.jit(lambda y, g=g: pm._pair_sum(y, y, DELTA, g))
            out, h = f(x)
            err = float(jnp.linalg.norm(out - exact) / jnp.linalg.norm(exact))
            t_pm = _common.timeit(lambda: f(x)[0].block_until_ready(), repeat=2, min_time=0.1)
            row = {
                "state": name,
                "J": int(x.shape[0]),
                "d": d,
                "grid": g,
                "h_over_delta": float(jnp.max(h) / DELTA),
                "rel_l2_error": err,
                "pm_s": t_pm,
                "direct_s": t_direct,
            }
            rows.append(row)
            print(
                f"{name:>26} {g:>5} {row['h_over_delta']:>8.2f} {err:>13.2e} {t_pm:>8.4f} {t_direct:>9.4f}", flush=True
            )
    return rows


def timing(sizes: list, direct_max: int) -> dict:
    rows = []
    print(f"\n{'d':>2} {'J':>8} {'pm s (default grid)':>20} {'direct s':>10} {'direct / pm':>11}")
    per_pair = {}
    for d in (2, 3):
        for n in sizes:
            x = ksdp.uniform_ball(jax.random.key(n + d), n, d)
            f = jax.jit(lambda y: pm.pair_sum(y, y, DELTA))
            t_pm = _common.timeit(lambda: f(x).block_until_ready(), repeat=2, min_time=0.1)
            row = {"d": d, "J": n, "grid": pm.DEFAULT_GRID[d], "pm_s": t_pm}
            if n <= direct_max:
                g = jax.jit(lambda y: ipm.pair_sum(y, y, DELTA))
                row["direct_s"] = _common.timeit(lambda: g(x).block_until_ready(), repeat=2, min_time=0.1)
                row["direct_measured"] = True
                per_pair[d] = row["direct_s"] / n**2  # the largest measured J sets the extrapolation
            else:
                row["direct_s"] = per_pair[d] * n**2
                row["direct_measured"] = False
            row["ratio"] = row["direct_s"] / t_pm
            rows.append(row)
            label = "" if row["direct_measured"] else " (extrapolated J^2)"
            print(f"{d:>2} {n:>8} {t_pm:>20.4f} {row['direct_s']:>10.4g} {row['ratio']:>11.2f}{label}", flush=True)
    crossover = {}
    for d in (2, 3):
        measured = [r for r in rows if r["d"] == d]
        faster = [r["J"] for r in measured if r["ratio"] > 1]
        crossover[d] = min(faster) if faster else None
    print(f"smallest J (of those measured) where the particle mesh is faster: {crossover}")
    return {"rows": rows, "direct_s_per_pair": per_pair, "crossover_J": crossover}


def runs(selected: list, direct_per_pair: dict) -> list:
    rows = []
    print(f"\n{'run':>30} {'J':>8} {'steps':>6} {'pm s':>8} {'direct s (extrap.)':>19} {'h/delta':>8} {'accepted':>9}")
    for name, d, flow, amp, t_end, n in selected:
        steps = int(round(t_end / ipm.DEFAULT_DT))
        kwargs = dict(times=(t_end,), n_particles=n, d=d, flow=flow, drift="pm", check=False)
        params = ksdp.Params(delta=DELTA, flow=amp)
        # compile on a 1-step run of the same shapes (the step count is static): then time the run
        ksdp.simulate(jax.random.key(0), params, **dict(kwargs, times=(ipm.DEFAULT_DT,))).particles.block_until_ready()
        t0 = time.perf_counter()
        traj = ksdp.simulate(jax.random.key(0), params, **kwargs)
        traj.particles.block_until_ready()
        wall = time.perf_counter() - t0
        spacing = float(traj.grid_spacing)
        ok = bool(np.asarray(traj.nonfinite_step) < 0 and np.asarray(traj.unstable_step) < 0)
        row = {
            "run": name,
            "d": d,
            "J": n,
            "steps": steps,
            "grid": pm.DEFAULT_GRID[d],
            "pm_s": wall,
            "direct_s_extrapolated": direct_per_pair[d] * n**2 * steps,
            "grid_spacing": spacing,
            "finite_and_healthy": ok,
            "accepted_by_check": ok and spacing <= pm.SPACING_LIMIT,
            "m2": float(ipm.second_moment(traj.particles[-1])),
        }
        rows.append(row)
        print(
            f"{name:>30} {n:>8} {steps:>6} {wall:>8.1f} {row['direct_s_extrapolated']:>19.3g} {spacing:>8.2f} "
            f"{str(row['accepted_by_check']):>9}",
            flush=True,
        )
    return rows


def figure(payload: dict, path: str, device: str) -> str:
    """Error against the grid's cell (per state) and cost against J (both drifts); returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    for name in dict.fromkeys(r["state"] for r in payload.get("accuracy", [])):
        rows = [r for r in payload["accuracy"] if r["state"] == name]
        ax.loglog([r["h_over_delta"] for r in rows], [r["rel_l2_error"] for r in rows], "o-", label=name)
    ax.axhline(1e-3, color="k", ls=":", lw=1, label="1e-3 (the target)")
    ax.set_xlabel("largest cell h / delta")
    ax.set_ylabel("relative L2 error of the drift")
    ax.set_title("particle mesh vs direct drift, J = 10^4")
    ax.legend(fontsize=7)
    ax = axes[1]
    rows = payload.get("timing", {}).get("rows", [])
    for d, color in ((2, "C0"), (3, "C1")):
        r = [x for x in rows if x["d"] == d]
        if not r:
            continue
        ax.loglog([x["J"] for x in r], [x["pm_s"] for x in r], "o-", color=color, label=f"particle mesh, d = {d}")
        meas = [x for x in r if x["direct_measured"]]
        extra = [x for x in r if not x["direct_measured"]]
        ax.loglog([x["J"] for x in meas], [x["direct_s"] for x in meas], "s--", color=color, label=f"direct, d = {d}")
        if extra:
            ax.loglog(
                [meas[-1]["J"]] + [x["J"] for x in extra],
                [meas[-1]["direct_s"]] + [x["direct_s"] for x in extra],
                ":",
                color=color,
                label=f"direct, d = {d} (extrapolated J^2)",
            )
    ax.set_xlabel("J")
    ax.set_ylabel("seconds per drift evaluation")
    ax.set_title(f"cost, {device}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    from ksdp._io import atomic_write

    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    print(f"wrote {path}")
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=("states", "accuracy", "statistics", "timing", "runs"), default=None)
    ap.add_argument("--quick", action="store_true", help="small sizes (a minute): J = 2000 states, J <= 10^5, no runs")
    ap.add_argument("--n-states", type=int, default=10_000, help="J of the paper's states")
    ap.add_argument("--direct-max", type=int, default=30_000, help="largest J the direct drift is timed at")
    ap.add_argument("--cache", default=os.path.join("ksdp-runs", "benchmark-states.npz"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    parts = set(args.only or ("states", "accuracy", "statistics", "timing", "runs"))
    n_states = 2000 if args.quick else args.n_states
    cache = args.cache.replace(".npz", f"-{n_states}.npz")
    payload = {"delta": DELTA, "default_grid": pm.DEFAULT_GRID, "spacing_limit": pm.SPACING_LIMIT}
    if parts & {"states", "accuracy", "statistics"}:
        states = make_states(n_states, cache)
    if "accuracy" in parts:
        payload["accuracy"] = accuracy(states, {2: GRIDS[2][:3], 3: GRIDS[3][:2]} if args.quick else GRIDS)
    if "statistics" in parts:
        payload["statistics"] = statistics(states, STATISTICS[:1] if args.quick else STATISTICS)
    if parts & {"timing", "runs"}:
        sizes = [1000, 3000, 10_000, 30_000, 100_000] + ([] if args.quick else [300_000, 1_000_000])
        payload["timing"] = timing(sizes, min(args.direct_max, 10_000) if args.quick else args.direct_max)
    if "runs" in parts and not args.quick:
        payload["runs"] = runs(RUNS, payload["timing"]["direct_s_per_pair"])
    path = _common.save("particle-mesh", payload, args.out)
    figure(payload, path.replace(".json", ".png"), _common.device_name())
    return payload


if __name__ == "__main__":
    main()
