"""``python -m ksdp.experiments``: the paper's experiments, figures and a numeric report."""

import argparse
import os
import sys
import tempfile
import time
import traceback

import jax

from ksdp import storage
from ksdp.experiments import checks, evaluate, ipm_data, report, run
from ksdp.experiments.specs import EXPERIMENTS, PAPER, SCALES
from ksdp.generator import load_generator

EPILOG = (
    "experiments:\n"
    + "\n".join(
        f"  {e.name:<24} {'Sec. ' if e.section[0].isdigit() else ''}{e.section}: {e.summary}"
        for e in EXPERIMENTS.values()
    )
    + """

scales:
  smoke   J=128, a few training steps: checks the pipeline, not a law (the tests run it)
  quick   the default: J=2000, N=1000, 6000 Adam steps, each network trained on a pool of 10
          more IPM runs per training value (kolmogorov3d-amplitude: 30 runs, N=2000)
  paper   the paper's sizes: J=10000, N=2000, 50000 Adam steps (K=L=50); many times the quick
          scale's cost, best on an accelerator. Each page's settings table has its stages' times.

Outputs under OUT/<experiment>/: README.md (its page), dataset.npz (reused when its settings match;
simulated one replica at a time, each saved under dataset.npz.parts/ until the whole is written), pool.npz
(the training pool's runs, cached the same way), checkpoint.npz
(training resumes from it), metrics.json, projections.png, second_moment.png, loss.png; and
OUT/REPORT.md with every metric. An interrupted run picks up where it stopped."""
)


def _unwritable(folder: str) -> str | None:
    """Why ``folder`` cannot hold the outputs (``None`` if it can): checked before any work."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        return f"{folder} is not a writable folder ({e.strerror or e})"
    return None


def _memory_bytes() -> int | None:
    """This machine's physical memory, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _pool_bytes(exp, scale: str, n_particles: int) -> int:
    """Bytes of an experiment's IPM runs at J = ``n_particles``: the replicas, the pool and the reference
    runs, float32 positions (the training targets copy the pool once more)."""
    values = len(exp.all_values(scale))
    train = len(exp.values(scale)[0])
    runs = len(ipm_data.REPLICAS) * values + 2 * (ipm_data.pool_runs(exp, scale) or 0) * train
    runs += ipm_data.reference_runs(exp, scale) * values
    return runs * n_particles * exp.d * 4


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m ksdp.experiments``."""
    ap = argparse.ArgumentParser(
        prog="python -m ksdp.experiments",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "experiments", nargs="*", metavar="EXPERIMENT", help="names (default: the paper's five; ks2d-eps by name)"
    )
    ap.add_argument("--scale", choices=tuple(SCALES), default="quick")
    ap.add_argument("--out", default="ksdp-runs", help="output folder (default: ksdp-runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--particles",
        type=int,
        default=None,
        metavar="J",
        help="IPM particles per run (training pool, reference, floor); default: the scale's J",
    )
    ap.add_argument(
        "--drift",
        choices=("auto", "direct", "pm"),
        default="auto",
        help="how the IPM sums the drift: all pairs, particle mesh, or by J (default; ksdp.simulate)",
    )
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="compute nothing: rebuild REPORT.md and the pages from the metrics.json files already in OUT",
    )
    ap.add_argument(
        "--docs",
        metavar="DIR",
        default=None,
        help="also copy each finished run's metrics.json and figures into the documentation folder DIR "
        "(DIR/runs/SCALE/, DIR/figures/) and regenerate its pages from them",
    )
    ap.add_argument(
        "--ship",
        metavar="DIR",
        default=None,
        help="also copy each finished run's generator.npz to DIR/EXPERIMENT.npz when it passes its whole acceptance "
        "(the package's pretrained maps live in ksdp/pretrained)",
    )
    return ap


def checked_names(ap: argparse.ArgumentParser, args) -> list:
    """The experiments to run or report, after every argument is checked (``ap.error`` otherwise): nothing
    runs before the command line is known to be sound, absurd sizes included."""
    unknown = [e for e in args.experiments if e not in EXPERIMENTS]
    if unknown:
        ap.error(f"unknown experiment(s) {unknown}; choose from {list(EXPERIMENTS)}")
    names = args.experiments or list(PAPER)
    if args.report_only and not args.experiments:  # the report shows every experiment run in OUT
        done = lambda n: os.path.exists(os.path.join(args.out, args.scale, n, "metrics.json"))
        names += [n for n in EXPERIMENTS if n not in PAPER and done(n)]
    if args.particles is not None:
        worst = max(names, key=lambda n: ipm_data.least_particles(EXPERIMENTS[n], args.scale))
        exp = EXPERIMENTS[worst]
        least = ipm_data.least_particles(exp, args.scale)
        if args.particles < least:
            n = ipm_data.scale_of(exp, args.scale).train.n_samples
            ap.error(
                f"--particles must be at least {least} for {worst} at the "
                f"{args.scale} scale (two disjoint samples of N = {n} from "
                f"each training set of {ipm_data.pool_runs(exp, args.scale) or 1} run(s)), got {args.particles}."
            )
        # the largest array a run holds at once: the training pool (or the replicas), float32 positions
        for name in names:
            need = _pool_bytes(EXPERIMENTS[name], args.scale, args.particles)
            have = _memory_bytes()
            if have and need > have / 2:
                ap.error(
                    f"--particles {args.particles}: {name}'s IPM runs alone would hold {need / 2**30:.1f} GiB, more "
                    f"than half of the {have / 2**30:.1f} GiB of memory here; choose a smaller J."
                )
    if not 0 <= args.seed < 2**62:
        ap.error(f"--seed must be an integer in [0, 2^62), got {args.seed}.")
    problem = _unwritable(os.path.join(args.out, args.scale))
    if problem:
        ap.error(f"--out {args.out!r}: {problem}; choose a folder you can write to.")
    return names


def main(argv=None):
    ap = parser()
    args = ap.parse_args(argv)
    names = checked_names(ap, args)
    out = os.path.join(args.out, args.scale)
    log = lambda msg: print(msg, flush=True)
    log(f"ksdp experiments: {names} at scale '{args.scale}' on {jax.devices()[0].platform}, output in {out}")
    t_all = time.perf_counter()
    if args.report_only:
        results, failures = load_finished(out, names, log)
    else:
        results, failures = run_all(args, out, names, log)
    write_pages(out, args.scale, results, failures, log)
    seconds = None if args.report_only else time.perf_counter() - t_all
    text = report.render(out, args.scale, names, failures, seconds)
    try:
        storage.write_text(os.path.join(out, "REPORT.md"), text)
        log(f"wrote {os.path.join(out, 'REPORT.md')} ({time.perf_counter() - t_all:.0f} s in all)")
        if args.docs is not None:
            write_docs(args.docs, out, args.scale, results, log)
        if args.ship is not None:
            ship(args.ship, out, results, log)
    except OSError as e:  # the report, the docs or the shipped maps could not be written: say which, no traceback
        log(f"FAILED: {e}")
        return 1
    return 1 if failures else 0


def load_finished(out: str, names: list, log) -> tuple[dict, dict]:
    """``--report-only``: each experiment's complete metrics.json, or why it has none: ``(results, failures)``."""
    results, failures = {}, {}
    for name in names:
        try:
            m = checks.load_metrics(out, name)
        except checks.MetricsError as e:
            failures[name] = str(e)
            log(f"[{name}] {e}")
            continue
        if m is None or not m.get("complete"):
            failures[name] = "no complete metrics.json in " + os.path.join(out, name)
        else:
            results[name] = m
    return results, failures


def run_all(args, out: str, names: list, log) -> tuple[dict, dict]:
    """Runs each experiment (`ksdp.experiments.run.run`); one failure does not lose the others:
    ``(results, failures)``."""
    results, failures = {}, {}
    for name in names:
        log(f"[{name}] start")
        t0 = time.perf_counter()
        try:
            m = run.run(
                EXPERIMENTS[name], args.scale, out, args.seed, log, n_particles=args.particles, drift=args.drift
            )
            results[name] = m
            log(
                f"[{name}] done in {time.perf_counter() - t0:.0f} s; worst C2ST excess (judged) / energy z / m2 "
                "error: "
                + "; ".join(
                    f"{k} {v['max_c2st_excess']:+.3f} ({v['max_c2st_checked_excess']:+.3f}) / "
                    f"{v['max_energy_z']:.1f} / {v['max_m2_rel_error']:.3f}"
                    for k, v in m["summary_by_kind"].items()
                )
            )
        except Exception as e:  # one failure must not lose the others
            failures[name] = f"{type(e).__name__}: {e}"
            log(f"[{name}] FAILED: {failures[name]}")
            if not isinstance(e, OSError):  # a file or folder in the way says so itself; anything else is a bug
                traceback.print_exc()
    return results, failures


def write_pages(out: str, scale: str, results: dict, failures: dict, log) -> None:
    """Each finished experiment's page (README.md in its folder); one that cannot be rendered or written
    moves from ``results`` to ``failures``, and the others are written."""
    for name in list(results):
        try:
            page = report.render_experiment(out, name, scale)
            storage.write_text(os.path.join(out, name, "README.md"), page)
        except (checks.MetricsError, KeyError, TypeError, ValueError, OSError) as e:  # not lose the others
            what = "written" if isinstance(e, OSError) else "rendered"
            failures[name] = f"its page could not be {what} ({type(e).__name__}: {e})"
            log(f"[{name}] {failures[name]}")
            del results[name]


def ship(folder: str, out: str, results: dict, log) -> None:
    """Copies each finished run's generator to ``folder/<experiment>.npz``, after reading it back
    (`ksdp.load_generator` validates it) and only if it passed its acceptance: every check at every
    training and held-out value, and the experiment's own (`report.acceptance`: the radial KS, the
    core's anisotropy, memorisation); a failing map is reported and left where it is. ``results`` maps
    each experiment to its metrics."""
    for name, metrics in results.items():
        src = os.path.join(out, name, "generator.npz")
        if not os.path.exists(src):
            log(f"[{name}] not shipped: {src} does not exist (a run before generators were saved)")
            continue
        # stamped with the acceptance by the current rules (load_metrics judges the stored numbers again)
        metrics = {**metrics, "summary_by_kind": evaluate.summarise(metrics["rows"])}
        gen = run.shipped_generator(EXPERIMENTS[name], load_generator(src), metrics)
        summary = metrics["summary_by_kind"]
        failing = [k for k in ("train", "held-out") if not summary.get(k, {}).get("all_ok")]
        if failing:
            log(f"[{name}] not shipped: its acceptance fails at the {' and '.join(failing)} values")
            continue
        lines = report.acceptance(metrics)
        if lines:
            log(f"[{name}] not shipped: its acceptance fails:\n" + "\n".join(lines))
            continue
        gen.save(os.path.join(folder, f"{name}.npz"))
        log(f"[{name}] shipped to {os.path.join(folder, name + '.npz')}")


def write_docs(docs: str, out: str, scale: str, results: dict, log) -> None:
    """Copies the finished runs' metrics.json and figures into the documentation folder ``docs`` and
    rewrites its generated pages from the copies (`report.docs_pages`)."""

    def copy(src: str, dst: str) -> None:
        with open(src, "rb") as f:
            data = f.read()
        storage.atomic_write(dst, lambda g: g.write(data))

    for name in results:
        copy(os.path.join(out, name, "metrics.json"), os.path.join(docs, "runs", scale, name, "metrics.json"))
        for figure in report.FIGURES:
            src = os.path.join(out, name, figure)
            if os.path.exists(src):
                copy(src, report.figure_path(docs, scale, name, figure))
    for path, text in report.docs_pages(docs, scale, list(EXPERIMENTS)).items():
        storage.write_text(os.path.join(docs, path), text)
        log(f"wrote {os.path.join(docs, path)}")


if __name__ == "__main__":
    sys.exit(main())
