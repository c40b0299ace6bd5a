"""``python -m benchmarks``: every benchmark, one summary table, one JSON, figures.

    python -m benchmarks [--full] [--only ipm particle_mesh transport train scaling] [--out benchmarks/results]
    python -m benchmarks --collect RESULT.json [RESULT.json ...] [--out benchmarks/results]

Runs each script (``benchmarks/{ipm,particle_mesh,transport,train,scaling}.py``) in a fresh interpreter, so each
compiles and allocates on its own; ``scaling`` gets 4 forced host devices on a CPU. The scripts'
own JSON files go to a temporary folder (so a suite run never overwrites a standalone run's file);
this command writes ``<out>/<device>-<date>.json`` with all of them,
prints a table where every figure is a ratio against a baseline measured in the same run (with the
absolute figure and the device), and draws ``<device>-<date>-{ipm,particle_mesh,transport,scaling}.png``.

``--collect`` builds the same table, JSON and figures from the JSON files of scripts already run
one by one (say each under its own time limit, so that one overrunning script loses nothing of the
others); the device and date are those of the files, which must agree.

Sizes: on a CPU the suite uses sizes that finish in under 10 minutes on 2 cores (J up to 16k,
N up to 2000); ``--full`` (and any accelerator) uses each script's own defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks import _common

SCRIPTS = ("ipm", "particle_mesh", "transport", "train", "scaling")
CPU_SUITE = {
    "ipm": ["--sizes", "1000", "4000", "16000", "--steps", "100"],
    "particle_mesh": ["--quick"],
    "transport": ["--sizes", "500", "2000", "8000", "--blocks-max-n", "2000"],
    "train": ["--minibatches", "1"],
    "scaling": [],
}


def run_script(name: str, extra: list, out: str) -> dict:
    env = dict(os.environ)
    if name == "scaling" and _common.device_name().startswith("cpu"):
        from benchmarks.scaling import FORCE

        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + FORCE).strip()
    cmd = [sys.executable, "-m", f"benchmarks.{name}", *extra, "--out", out]
    print(f"\n$ {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
    sys.stdout.write(proc.stdout)
    if proc.returncode:
        raise RuntimeError(f"benchmarks.{name} failed with exit code {proc.returncode}")
    written = [line.split("wrote ", 1)[1].strip() for line in proc.stdout.splitlines() if line.startswith("wrote ")]
    path = [p for p in written if p.endswith(".json")][-1]  # a script may also write figures
    with open(path) as f:
        payload = json.load(f)
    payload["command"] = "python -m " + " ".join([f"benchmarks.{name}", *extra])
    payload["wall_s"] = time.perf_counter() - t0
    return payload


def collect(paths: list) -> tuple:
    """``(environment, results)`` from scripts' JSON files: one file per script, one device, one date."""
    results, env = {}, None
    for path in paths:
        try:
            with open(path) as f:
                payload = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            raise SystemExit(f"--collect: cannot read {path!r}: {err}") from None
        name = str(payload.get("benchmark", "")).replace("-", "_")
        if name not in SCRIPTS:
            raise SystemExit(f"--collect: {path!r} is not a result of {', '.join(SCRIPTS)} (benchmark {name!r})")
        if name in results:
            raise SystemExit(f"--collect: two results of benchmarks.{name}; pass one file per script")
        e = payload["environment"]
        if env is not None and (e["device"], e["date"]) != (env["device"], env["date"]):
            raise SystemExit(
                f"--collect: {path!r} was measured on {e['device']} on {e['date']}, the others on "
                f"{env['device']} on {env['date']}; a summary compares one device in one run"
            )
        env = env or e
        results[name] = payload
    return env, results


def summary(results: dict, device: str) -> list:
    """Rows ``(what, absolute figure, ratio, baseline)`` of the headline numbers."""
    rows = []
    if "ipm" in results:
        r = results["ipm"]
        for row in r["drift"]:
            if "ratio" in row and row["J"] == max(x["J"] for x in r["drift"] if "ratio" in x):
                rows.append(
                    (
                        f"IPM drift J={row['J']} d={row['d']} {row['kernel']}",
                        f"{row['ksdp_pairs_per_s']:.3g} pairs/s",
                        row["ratio"],
                        "vectorised NumPy",
                    )
                )
        s = r["simulate"]
        rows.append(
            (
                f"IPM simulate J={s['J']}, {s['steps']} steps",
                f"{s['seconds_per_1000_steps']:.2f} s/1000 steps",
                None,
                "-",
            )
        )
    if "particle_mesh" in results:
        r = results["particle_mesh"]
        for d, method in ((2, "pm"), (3, "p3m")):
            timed = [x for x in r["timing"]["rows"] if x["d"] == d and x["method"] == method]
            if timed:
                x = timed[-1]
                label = "" if x["direct_measured"] else ", extrapolated J^2"
                rows.append(
                    (
                        f"{method.upper()} drift J={x['J']} d={d} G={x['grid']}",
                        f"{x['mesh_s'] * 1e3:.3g} ms",
                        x["ratio"],
                        f"direct drift ({x['direct_s']:.3g} s{label})",
                    )
                )
    if "transport" in results:
        for row in results["transport"]["rows"]:
            if "ksdp_s" in row:  # a result from before the auction: block descent only
                rows.append(
                    (
                        f"assignment N={row['N']} to 0.5%",
                        f"{row['ksdp_s']:.3g} s ({row['ksdp_sweeps']} sweeps)",
                        row["scipy_over_ksdp"],
                        "SciPy exact",
                    )
                )
                sk = row["sinkhorn"]
                if sk:
                    est = " (estimate)" if sk.get("estimate") else ""
                    rows.append(
                        (
                            f"  Sinkhorn N={row['N']} eps={sk['epsilon']:g}{est}",
                            f"{sk['seconds']:.3g} s",
                            sk["seconds"] / row["ksdp_s"],
                            "(ksdp speed-up over it)",
                        )
                    )
                continue
            base = "POT emd2 (exact)" if row.get("pot_s") else "SciPy exact"
            base_s = row.get("pot_s") or row.get("scipy_s")
            for auc in row.get("auction", []):
                rows.append(
                    (
                        f"W2 auction N={row['N']}, tol {auc['tol']:g}",
                        f"{auc['seconds']:.3g} s (gap {auc['certified_gap']:.1e})",
                        base_s / auc["seconds"] if base_s else float("nan"),
                        base,
                    )
                )
            blocks = row.get("blocks") or {}
            if blocks:
                rows.append(
                    (
                        f"  block descent N={row['N']} to 0.5%",
                        f"{blocks['seconds']:.3g} s ({blocks['sweeps']} sweeps)",
                        base_s / blocks["seconds"] if base_s else float("nan"),
                        base,
                    )
                )
            sk = row["sinkhorn"]
            if sk and row.get("auction"):
                est = " (estimate)" if sk.get("estimate") else ""
                rows.append(
                    (
                        f"  Sinkhorn N={row['N']} eps={sk['epsilon']:g}{est}",
                        f"{sk['seconds']:.3g} s",
                        sk["seconds"] / row["auction"][-1]["seconds"],
                        "(the auction's speed-up over it)",
                    )
                )
    if "train" in results:
        t = results["train"]
        rows.append(
            (
                "training, 8 sets x 2000",
                f"{t['train_steps_per_s']:.1f} steps/s",
                t["train_ratio_vs_python_loop"],
                "Python loop of jitted steps",
            )
        )
        rows.append(
            (
                "block sweep, 8 x 2000, M=16",
                f"{t['sweep_s'] * 1e3:.1f} ms",
                t["sweep_ratio_vs_scipy_per_block"],
                "SciPy block by block",
            )
        )
        rows.append(
            (
                "generation, 10^6 particles",
                f"{t['generated_particles_per_s']:.3g} /s",
                t["generate_ratio_vs_unchunked"],
                "one un-chunked call",
            )
        )
    if "scaling" in results:
        for row in results["scaling"]["rows"]:
            if row["devices"] > 1:
                rows.append(
                    (
                        f"{row['problem']} on {row['devices']} devices",
                        f"{row['seconds']:.3g} s",
                        row["speedup_vs_1"],
                        f"1 device (|diff| {row['max_abs_diff']:.1e})",
                    )
                )
    return rows


def plot(results: dict, stem: str) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    if "ipm" in results:
        fig, ax = plt.subplots(figsize=(6, 4))
        drift = results["ipm"]["drift"]
        for d in (2, 3):
            for kernel, style in (("paper", "-"), ("blob", "--")):
                pts = sorted(
                    (r["J"], r["ksdp_pairs_per_s"], r.get("numpy_pairs_per_s"))
                    for r in drift
                    if r["d"] == d and r["kernel"] == kernel
                )
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", label=f"ksdp d={d} {kernel}")
                base = [p for p in pts if p[2]]
                ax.plot(
                    [p[0] for p in base],
                    [p[2] for p in base],
                    style,
                    marker="x",
                    color="gray",
                    alpha=0.6,
                    label=f"NumPy d={d} {kernel}",
                )
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="particles J",
            ylabel="pair interactions / s",
            title=f"IPM drift ({results['ipm']['environment']['device']})",
        )
        ax.legend(fontsize=6, ncol=2)
        paths.append(_save(fig, stem + "-ipm.png"))
    if "transport" in results:
        rows = results["transport"]["rows"]
        fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
        for tol_i, marker in ((0, "o-"), (-1, "D-")):
            pts = [(r["N"], r["auction"][tol_i]) for r in rows if r.get("auction")]
            if pts:
                a.plot(
                    [p[0] for p in pts],
                    [p[1]["seconds"] for p in pts],
                    marker,
                    label=f"ksdp auction, tol {pts[0][1]['tol']:g}",
                )
        for key, marker, label in (("pot_s", "s-", "POT emd2 (exact)"), ("scipy_s", "v-", "SciPy exact")):
            pts = [(r["N"], r[key]) for r in rows if r.get(key)]
            a.plot([p[0] for p in pts], [p[1] for p in pts], marker, label=label)
        pts = [(r["N"], r["blocks"]["seconds"]) for r in rows if r.get("blocks")]
        pts += [(r["N"], r["ksdp_s"]) for r in rows if "ksdp_s" in r]  # results from before the auction
        a.plot([p[0] for p in pts], [p[1] for p in pts], "x--", label="ksdp blocks (to 0.5%)")
        sk = [(r["N"], r["sinkhorn"]["seconds"], r["sinkhorn"].get("estimate", False)) for r in rows if r["sinkhorn"]]
        a.plot([p[0] for p in sk if not p[2]], [p[1] for p in sk if not p[2]], "^-", label="ott Sinkhorn")
        if any(p[2] for p in sk):
            a.plot(
                [p[0] for p in sk if p[2]], [p[1] for p in sk if p[2]], "^", mfc="none", label="ott Sinkhorn (estimate)"
            )
        a.set(
            xscale="log",
            yscale="log",
            xlabel="N",
            ylabel="seconds",
            title=f"W2 solvers ({results['transport']['environment']['device']})",
        )
        a.legend(fontsize=6)
        for tol_i, marker in ((0, "o-"), (-1, "D-")):
            pts = [(r["N"], r["auction"][tol_i]) for r in rows if r.get("auction")]
            if pts:
                tol = pts[0][1]["tol"]
                b.plot(
                    [p[0] for p in pts], [p[1]["certified_gap"] for p in pts], marker, label=f"certified, tol {tol:g}"
                )
                b.plot([p[0] for p in pts], [max(p[1]["true_gap"], 1e-9) for p in pts], ":", label=f"true, tol {tol:g}")
        pts = [(r["N"], r["blocks"]["gap"]) for r in rows if r.get("blocks")]
        pts += [(r["N"], r["ksdp_gap"]) for r in rows if "ksdp_gap" in r]
        b.plot([p[0] for p in pts], [p[1] for p in pts], "x--", label="blocks")
        b.set(xscale="log", yscale="log", xlabel="N", ylabel="relative gap on $W_2^2$", title="accuracy reached")
        b.legend(fontsize=6)
        paths.append(_save(fig, stem + "-transport.png"))
    if "scaling" in results:
        rows = results["scaling"]["rows"]
        fig, ax = plt.subplots(figsize=(5, 3.6))
        for name in dict.fromkeys(r["problem"] for r in rows):
            pts = [(r["devices"], r["speedup_vs_1"]) for r in rows if r["problem"] == name]
            ax.plot(*zip(*pts, strict=True), "o-", label=name)
        devs = sorted({r["devices"] for r in rows})
        ax.plot(devs, devs, ":", color="gray", label="ideal")
        ax.set(
            xlabel="devices",
            ylabel="speed-up over 1 device",
            title=f"sharded paths ({results['scaling']['environment']['device']})",
        )
        ax.legend(fontsize=7)
        paths.append(_save(fig, stem + "-scaling.png"))
    if "particle_mesh" in results:
        from benchmarks import particle_mesh

        r = results["particle_mesh"]
        paths.append(particle_mesh.figure(r, stem + "-particle_mesh.png", r["environment"]["device"]))
    return paths


def _save(fig, path):
    from ksdp.storage import atomic_write

    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    import matplotlib.pyplot as plt

    plt.close(fig)
    print(f"wrote {path}")
    return path


FIGURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "figures", "benchmarks")


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--full", action="store_true", help="each script's own default sizes")
    ap.add_argument("--only", nargs="+", choices=SCRIPTS, default=list(SCRIPTS))
    ap.add_argument("--out", default=_common.RESULTS, help="folder of the JSON (default: benchmarks/results)")
    ap.add_argument(
        "--figures", default=FIGURES, help="folder of the figures (default: docs/figures/benchmarks, shown by the docs)"
    )
    ap.add_argument(
        "--collect",
        nargs="+",
        metavar="RESULT.json",
        default=None,
        help="summarise these scripts' JSON files instead of running the scripts",
    )
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.collect:
        env, results = collect(args.collect)
        args.only = list(results)
    else:
        env = _common.environment()
        suite = {} if args.full or not env["device"].startswith("cpu") else CPU_SUITE
        import tempfile

        with tempfile.TemporaryDirectory() as scratch:
            results = {name: run_script(name, suite.get(name, []), scratch) for name in args.only}
    rows = summary(results, env["device"])
    print(f"\nksdp benchmarks on {env['device']} (jax {env['jax']}), {time.perf_counter() - t0:.0f} s")
    print(f"{'what':<40} {'ksdp':>26} {'ratio':>8}  baseline (same run)")
    for what, value, ratio, base in rows:
        print(f"{what:<40} {value:>26} {'' if ratio is None else f'{ratio:.1f}x':>8}  {base}")
    stem = os.path.join(args.out, f"{env['device']}-{env['date']}")
    from ksdp.storage import write_json

    command = (
        "python -m benchmarks"
        + (" --full" if args.full else "")
        + ("" if args.only == list(SCRIPTS) or args.collect else " --only " + " ".join(args.only))
        + (" --collect " + " ".join(os.path.basename(p) for p in args.collect) if args.collect else "")
    )
    payload = {
        "environment": env,
        "command": command,
        "wall_s": time.perf_counter() - t0,
        "summary": [dict(zip(("what", "ksdp", "ratio", "baseline"), r, strict=True)) for r in rows],
        "benchmarks": results,
    }
    figure_stem = os.path.join(args.figures, os.path.basename(stem))
    payload["figures"] = [os.path.relpath(p, os.path.dirname(stem)) for p in plot(results, figure_stem)]
    write_json(stem + ".json", payload)
    print(f"wrote {stem}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
