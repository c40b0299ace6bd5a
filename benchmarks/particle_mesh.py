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
* ``runs``: whole simulations at the issue's sizes with the default drift (``"auto"``: PM for J =
  10^6 in 2D, ks2d to t = 0.1 and laminar2d at A = 100 to t = 0.1, and in 3D, laminar3d at A = 100 to
  t = 0.02; P3M for kolmogorov3d at A = 100 to t = 0.1, J = 10^5): wall time against the direct
  drift's extrapolated time, the grid spacing reached, whether the checked run accepts it, and the
  final state's drift error at 4000 targets against the direct sum over all J sources (at the run's
  grid and, for PM, at the grids ``FINAL_GRIDS``).

Prints tables and writes ``results/particle-mesh-<device>-<date>.json`` and a figure beside it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import ksdp
from benchmarks import _common
from ksdp import drifts, ipm
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
GRIDS = {2: (128, 256, 512, 1024), 3: (32, 64, 128, 192)}  # PM
P3M_GRIDS = {2: (64, 128, 256), 3: (32, 64, 96, 128)}  # P3M at the default cutoff
RUNS = [  # (name, d, flow, amplitude, end time, J, drift): the sizes, each with the default drift
    ("ks2d to t=0.1", 2, None, 0.0, 0.1, 10**6, "auto"),  # PM
    ("laminar2d A=100 to t=0.1", 2, "laminar2d", 100.0, 0.1, 10**6, "auto"),  # PM
    # P3M's near field at J = 10^6 in 3D would cost ~100x its J = 10^5 step: "auto" takes PM there
    ("laminar3d A=100 to t=0.02", 3, "laminar3d", 100.0, 0.02, 10**6, "auto"),  # PM
    ("kolmogorov3d A=100 to t=0.1", 3, "kolmogorov3d", 100.0, 0.1, 10**5, "auto"),  # P3M
]
FINAL_TARGETS = 4000  # runs: targets at which the final state's mesh drift is checked against the direct sum
FINAL_GRIDS = {2: (256, 512, 1024), 3: (128, 160, 192, 224)}  # and the PM grids it is checked at


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
    from ksdp.storage import atomic_write

    atomic_write(cache, lambda f: np.savez(f, **{k: np.asarray(v) for k, v in states.items()}))
    return states


STATISTICS = ("ks2d t=0.075", "laminar2d A=100 t=0.1", "laminar3d A=100 t=0.02")


def statistics(states: dict, names=STATISTICS, seed: int = 0) -> list:
    """Fast against direct runs at the states' J, judged against two direct runs (the floor).

    For each state: a second direct run and a particle-mesh run (other keys) of the same size;
    the energy distance of each to the cached direct run, and the m2 differences, with standard errors.
    ``seed`` shifts both runs' keys (by 1000 per unit), giving an independent pair per seed.
    """
    from ksdp import metrics

    rows = []
    print(
        f"\n{'state':>26} {'energy(mesh, direct)':>22} {'energy(direct, direct)':>24} {'z':>5} "
        f"{'m2 mesh':>8} {'m2 direct':>10}"
    )
    for name in names:
        d, flow, amp, t = STATES[name]
        x_ref = np.asarray(states[name])
        kwargs = dict(times=(t,), n_particles=x_ref.shape[0], d=d, flow=flow)
        params = ksdp.Params(delta=DELTA, flow=amp)
        i = list(STATES).index(name)
        x_direct = np.asarray(
            ksdp.simulate(jax.random.key(200 + i + 1000 * seed), params, drift="direct", **kwargs).particles[-1]
        )
        drift = "pm" if d == 2 else "p3m"
        traj = ksdp.simulate(jax.random.key(300 + i + 1000 * seed), params, drift=drift, check=False, **kwargs)
        x_pm = np.asarray(traj.particles[-1])
        e_pm = metrics.energy_distance(x_pm, x_ref)
        e_floor = metrics.energy_distance(x_direct, x_ref)
        m = {k: metrics.moments(v) for k, v in (("pm", x_pm), ("direct", x_direct), ("ref", x_ref))}
        z = (e_pm.value - e_floor.value) / float(np.hypot(e_pm.se, e_floor.se))
        row = {
            "state": name,
            "seed": seed,
            "J": int(x_ref.shape[0]),
            "drift": drift,
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


def accuracy(states: dict, grids: dict, p3m_grids: dict) -> list:
    rows = []
    print(
        f"\n{'state':>26} {'method':>6} {'grid':>5} {'h/delta':>8} {'rel L2 error':>13} {'mesh s':>8} {'direct s':>9}"
    )
    for name, x in states.items():
        d = x.shape[1]
        direct = jax.jit(lambda y: drifts.pair_sum(y, y, DELTA))
        exact = direct(x)
        t_direct = _common.timeit(lambda: direct(x).block_until_ready(), repeat=2, min_time=0.1)
        for method, cutoff, gs in (("pm", None, grids[d]), ("p3m", pm.DEFAULT_CUTOFF, p3m_grids[d])):
            for g in gs:
                f = jax.jit(lambda y, g=g, c=cutoff: pm.mesh_sum(y, y, DELTA, g, c))
                out, h = f(x)
                err = float(jnp.linalg.norm(out - exact) / jnp.linalg.norm(exact))
                t_mesh = _common.timeit(lambda f=f: f(x)[0].block_until_ready(), repeat=2, min_time=0.1)
                row = {
                    "state": name,
                    "J": int(x.shape[0]),
                    "d": d,
                    "method": method,
                    "grid": g,
                    "h_over_delta": float(jnp.max(h) / DELTA),
                    "rel_l2_error": err,
                    "mesh_s": t_mesh,
                    "direct_s": t_direct,
                }
                rows.append(row)
                print(
                    f"{name:>26} {method:>6} {g:>5} {row['h_over_delta']:>8.2f} {err:>13.2e} {t_mesh:>8.4f} "
                    f"{t_direct:>9.4f}",
                    flush=True,
                )
    return rows


def timing(sizes: list, direct_max: int, p3m_max: int) -> dict:
    """One drift on the uniform ball against J: PM (both d), P3M (3D, up to ``p3m_max``), direct."""
    rows = []
    print(f"\n{'d':>2} {'J':>8} {'method':>6} {'grid':>5} {'mesh s':>9} {'direct s':>10} {'direct / mesh':>13}")
    per_pair, direct_s = {}, {}
    for d in (2, 3):
        for n in sizes:
            x = ksdp.uniform_ball(jax.random.key(n + d), n, d)
            if n <= direct_max:
                g = jax.jit(lambda y: drifts.pair_sum(y, y, DELTA))
                direct_s[d, n] = _common.timeit(lambda: g(x).block_until_ready(), repeat=2, min_time=0.1)
                per_pair[d] = direct_s[d, n] / n**2  # the largest measured J sets the extrapolation
            measured = (d, n) in direct_s
            t_direct = direct_s[d, n] if measured else per_pair[d] * n**2
            for method in ("pm", "p3m") if d == 3 else ("pm",):
                if method == "p3m" and n > p3m_max:
                    continue
                drift, grid = drifts.resolve_drift(method, None, n, d, "blob")
                cutoff = pm.DEFAULT_CUTOFF if method == "p3m" else None
                f = jax.jit(lambda y, grid=grid, cutoff=cutoff: pm.mesh_sum(y, y, DELTA, grid, cutoff)[0])
                t_mesh = _common.timeit(lambda f=f: f(x).block_until_ready(), repeat=2, min_time=0.1)
                row = {
                    "d": d,
                    "J": n,
                    "method": method,
                    "grid": grid,
                    "mesh_s": t_mesh,
                    "direct_s": t_direct,
                    "direct_measured": measured,
                    "ratio": t_direct / t_mesh,
                }
                rows.append(row)
                label = "" if measured else " (direct extrapolated J^2)"
                print(
                    f"{d:>2} {n:>8} {method:>6} {grid:>5} {t_mesh:>9.4f} {t_direct:>10.4g} "
                    f"{row['ratio']:>13.2f}{label}",
                    flush=True,
                )
    crossover = {}
    for d, method in ((2, "pm"), (3, "pm"), (3, "p3m")):
        faster = [r["J"] for r in rows if r["d"] == d and r["method"] == method and r["ratio"] > 1]
        crossover[f"{method}-{d}d"] = min(faster) if faster else None
    print(f"smallest J (of those measured) where the mesh drift is faster than the direct one: {crossover}")
    return {"rows": rows, "direct_s_per_pair": per_pair, "crossover_J": crossover}


def final_error(x, drift: str, grid: int, n_targets: int = FINAL_TARGETS, seed: int = 0) -> dict:
    """Relative L2 error of the mesh drift on the state ``x [J, d]`` at ``n_targets`` random particles.

    The mesh drift of the whole cloud (tight box, so cells up to 9% finer than a run's plan) against
    the direct sum over all ``J`` sources at those targets: ``O(n_targets * J)`` pairs, seconds at
    J = 10^6. For PM also at the grids `FINAL_GRIDS` (how the error at this J falls with the cell).
    """
    d = x.shape[1]
    idx = np.random.default_rng(seed).choice(x.shape[0], size=min(n_targets, x.shape[0]), replace=False)
    exact = jax.jit(lambda y, s: drifts.pair_sum(y, s, DELTA))(x[idx], x)
    cutoff = pm.DEFAULT_CUTOFF if drift == "p3m" else None
    rows = []
    for g in sorted({grid, *FINAL_GRIDS[d]}) if drift == "pm" else [grid]:
        out, h = jax.jit(lambda y, g=g: pm.mesh_sum(y, y, DELTA, g, cutoff))(x)
        err = float(jnp.linalg.norm(out[idx] - exact) / jnp.linalg.norm(exact))
        rows.append({"grid": g, "h_over_delta": float(jnp.max(h) / DELTA), "rel_l2_error": err})
    at_grid = next(r for r in rows if r["grid"] == grid)
    return {"targets": len(idx), **at_grid, "grids": rows}


def runs(selected: list, direct_per_pair: dict) -> list:
    rows = []
    print(
        f"\n{'run':>30} {'J':>8} {'drift':>5} {'grid':>5} {'steps':>6} {'wall s':>8} {'direct s (extrap.)':>19} "
        f"{'h/delta':>8} {'accepted':>9} {'final error':>12}"
    )
    for name, d, flow, amp, t_end, n, drift in selected:
        steps = int(round(t_end / ipm.DEFAULT_DT))
        drift, grid = drifts.resolve_drift(drift, None, n, d, "blob")
        kwargs = dict(times=(t_end,), n_particles=n, d=d, flow=flow, drift=drift, grid=grid, check=False)
        params = ksdp.Params(delta=DELTA, flow=amp)
        # compile on a 1-step run of the same shapes (the step count is static): then time the run
        ksdp.simulate(jax.random.key(0), params, **dict(kwargs, times=(ipm.DEFAULT_DT,))).particles.block_until_ready()
        t0 = time.perf_counter()
        traj = ksdp.simulate(jax.random.key(0), params, **kwargs)
        traj.particles.block_until_ready()
        wall = time.perf_counter() - t0
        spacing = float(traj.grid_spacing)
        ok = bool(np.asarray(traj.nonfinite_step) < 0 and np.asarray(traj.unstable_step) < 0)
        x = traj.particles[-1]
        error = final_error(x, drift, grid)
        row = {
            "run": name,
            "d": d,
            "J": n,
            "drift": drift,
            "grid": grid,
            "steps": steps,
            "wall_s": wall,
            "direct_s_extrapolated": direct_per_pair[d] * n**2 * steps,
            "grid_spacing": spacing,
            "finite_and_healthy": ok,
            "accepted_by_check": ok and spacing <= pm.SPACING_LIMIT,
            "final_error": error,
            "m2": float(ipm.second_moment(x)),
            "date": datetime.date.today().isoformat(),
            "command": _common.command(),  # a merged file keeps rows of earlier commands
        }
        rows.append(row)
        print(
            f"{name:>30} {n:>8} {drift:>5} {grid:>5} {steps:>6} {wall:>8.1f} {row['direct_s_extrapolated']:>19.3g} "
            f"{spacing:>8.2f} {str(row['accepted_by_check']):>9} {error['rel_l2_error']:>12.2e}",
            flush=True,
        )
    return rows


def figure(payload: dict, path: str, device: str) -> str:
    """Error against the grid's cell (per state) and cost against J (both drifts); returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    ax = axes[0]
    acc = payload.get("accuracy", [])
    for i, name in enumerate(dict.fromkeys(r["state"] for r in acc)):
        for method, style in (("pm", "o-"), ("p3m", "s--")):
            rows = [r for r in acc if r["state"] == name and r.get("method", "pm") == method]
            if rows:
                ax.loglog(
                    [r["h_over_delta"] for r in rows],
                    [r["rel_l2_error"] for r in rows],
                    style,
                    color=f"C{i}",
                    label=f"{name} ({method.upper()})",
                )
    ax.axhline(1e-3, color="k", ls=":", lw=1, label="1e-3 (the target)")
    ax.set_xlabel("largest cell h / delta")
    ax.set_ylabel("relative L2 error of the drift")
    ax.set_title("mesh vs direct drift, J = 10^4 (P3M: cutoff 5 cells)")
    ax.legend(fontsize=6, ncol=2)
    ax = axes[1]
    rows = payload.get("timing", {}).get("rows", [])
    for d, color in ((2, "C0"), (3, "C1")):
        r = [x for x in rows if x["d"] == d]
        if not r:
            continue
        for method, style in (("pm", "o-"), ("p3m", "^-")):
            m = [x for x in r if x.get("method", "pm") == method]
            if m:
                label = f"{method.upper()}, d = {d}"
                ax.loglog([x["J"] for x in m], [x["mesh_s"] for x in m], style, color=color, label=label)
        pts = sorted({(x["J"], x["direct_s"], x["direct_measured"]) for x in r})
        meas = [p for p in pts if p[2]]
        extra = [p for p in pts if not p[2]]
        ax.loglog([p[0] for p in meas], [p[1] for p in meas], "s--", color=color, label=f"direct, d = {d}")
        if extra:
            ax.loglog(
                [meas[-1][0]] + [p[0] for p in extra],
                [meas[-1][1]] + [p[1] for p in extra],
                ":",
                color=color,
                label=f"direct, d = {d} (extrapolated J^2)",
            )
    ax.set_xlabel("J")
    ax.set_ylabel("seconds per drift evaluation")
    ax.set_title(f"cost, {device}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    from ksdp.storage import atomic_write

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
    ap.add_argument("--runs", nargs="+", default=None, help="names of the runs to do (default: all four)")
    ap.add_argument("--seed", type=int, default=0, help="statistics: shift the runs' keys for an independent pair")
    ap.add_argument("--cache", default=os.path.join("ksdp-runs", "benchmark-states.npz"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    parts = set(args.only or ("states", "accuracy", "statistics", "timing", "runs"))
    n_states = 2000 if args.quick else args.n_states
    cache = args.cache.replace(".npz", f"-{n_states}.npz")
    payload = {"delta": DELTA, "default_grid": pm.DEFAULT_GRID, "spacing_limit": pm.SPACING_LIMIT}
    # --only and --runs update the parts they run in today's file and keep the others; every part
    # (and every large run) is saved as soon as it is done, so a killed run loses only the one running
    today = os.path.join(
        args.out or _common.RESULTS, f"particle-mesh-{_common.device_name()}-{datetime.date.today().isoformat()}.json"
    )
    old = {}
    if not args.quick and os.path.exists(today):
        with open(today) as f:
            old = json.load(f)

    def save() -> dict:
        merged = {**{k: old[k] for k in ("accuracy", "statistics", "timing", "runs") if k in old}, **payload}
        if "runs" in payload and "runs" in old:  # runs done now replace their old rows only
            done = {r["run"] for r in payload["runs"]}
            merged["runs"] = [r for r in old["runs"] if r["run"] not in done] + payload["runs"]
        merged["path"] = _common.save("particle-mesh", merged, args.out)
        return merged

    if parts & {"states", "accuracy", "statistics"}:
        states = make_states(n_states, cache)
    if "accuracy" in parts:
        quick = {2: GRIDS[2][:3], 3: GRIDS[3][:2]}, {2: P3M_GRIDS[2][:2], 3: P3M_GRIDS[3][:2]}
        payload["accuracy"] = accuracy(states, *(quick if args.quick else (GRIDS, P3M_GRIDS)))
        save()
    if "statistics" in parts:
        payload["statistics"] = statistics(states, STATISTICS[:1] if args.quick else STATISTICS, args.seed)
        save()
    if "timing" in parts:
        sizes = [1000, 3000, 10_000, 30_000, 100_000] + ([] if args.quick else [300_000, 1_000_000])
        payload["timing"] = timing(
            sizes, min(args.direct_max, 10_000) if args.quick else args.direct_max, 30_000 if args.quick else 100_000
        )
        save()
    if "runs" in parts and not args.quick:
        unknown = set(args.runs or ()) - {r[0] for r in RUNS}
        if unknown:
            ap.error(f"unknown run(s) {sorted(unknown)}; choose from {[r[0] for r in RUNS]}")
        # the direct drift's cost per pair, measured in this run (the extrapolation's baseline)
        per_pair = (payload.get("timing") or timing([args.direct_max], args.direct_max, 0))["direct_s_per_pair"]
        payload["runs"] = []
        for run in RUNS:
            if args.runs is None or run[0] in args.runs:
                payload["runs"] += runs([run], per_pair)
                save()
    merged = save()
    figure(merged, merged["path"].replace(".json", ".png"), _common.device_name())
    return merged


if __name__ == "__main__":
    main()
