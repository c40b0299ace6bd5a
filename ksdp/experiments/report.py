"""``OUT/REPORT.md`` and ``OUT/<experiment>/README.md``: every metric with its floor, and the acceptance."""

from __future__ import annotations

import os

from ksdp import drifts, provenance
from ksdp.experiments.checks import (
    COM_TOLERANCE,
    KS_UNTIL,
    MetricsError,
    folded_ok,
    load_metrics,
    passes,
)
from ksdp.experiments.specs import (
    ANISOTROPY_Z,
    C2ST_SLACK,
    EXPERIMENTS,
    FLOOR_REPEATS,
    FOLD_LIMIT,
    FOLD_POINTS,
    MEMORISATION_Z,
    SCALES,
)
from ksdp.metrics import STRUCTURE_ALPHA

METRICS_TEXT = [
    "Every parameter value is compared on particles the network never trained on: two further",
    "independent IPM runs, `reference` and `floor`, of J particles each. Each distance of the generated",
    "particles to the reference is shown next to the same distance of the floor run to the reference",
    "(what a perfect generator would score), with its standard error:",
    "",
    "- C2ST: cross-validated accuracy of a classifier telling generated from IPM particles (n = J each;",
    "  0.5 = indistinguishable; IPM-vs-IPM in brackets). Where the experiment has m2 reference runs, also",
    "  the excess over k disjoint pairs of them ('more pairs', `ksdp.metrics.c2st_pairs`: generated against",
    "  one run of a pair less the pair's own C2ST, +- its SE from the spread over pairs) and the mean excess",
    "  over all 1 + k pairs ('all'), which the check judges (`ksdp.experiments.checks.c2st_check`). With",
    "  independent IPM runs in place of the generated cloud, one pair's excess spreads by 0.017 (0.013 to",
    "  0.022 by experiment) and exceeds +0.03 in 6 of 200 checks at the quick scale (`python -m",
    "  benchmarks.studies --only c2st`): on one pair a perfect generator fails about 3% of the values and",
    "  a +0.05 defect passes about one time in nine; over 6 pairs the spread is 2.4 times smaller (normal:",
    "  false alarms 4e-6, that defect caught 99.8% of the time). Runs evaluated before the more pairs have",
    "  none and are judged on the one pair.",
    "- energy: the unbiased energy distance (all generated particles against the reference; 0 for equal",
    "  laws), +- its jackknife SE; z = (energy - floor) / combined SE.",
    "- W2 at n = J +- its SE (the two-sample central limit theorem, from the matching's dual potentials;",
    "  runs before it have none), with the floor run's W2.",
    "- m2: second moment of the three pooled IPM runs (and of the experiment's further reference runs, where",
    "  it has them: the J column) and of the generated particles; its standard errors come from the spread",
    "  of single runs (those runs and the training runs; between training values interpolated), which",
    "  exceeds what the particles suggest, and include the training runs' own sampling error.",
    "- For ks2d-time, KS: the radial Kolmogorov-Smirnov distance of 10^5 generated particles and of the",
    "  pooled IPM runs to the blob mean field of `ksdp.reference`,",
    "  with the level F of the mean field's radial CDF where the generated one departs most (F = 0.99: in",
    "  the outer 1% of the mass). The generated particles come from radially stratified sources (one source",
    "  level |x|^d in each of 10^5 strata, `ksdp.model.generate(..., source='stratified')`), so that their",
    "  distance is the learnt law's own to a few 1e-4 (within 1/n for a map that carried radii to radii;",
    "  paper-scale draws spread by 1e-4 and lie 1-4e-4 above 10^6 levels'); 'iid' is that of 10^5",
    "  independent draws, which adds about 0.87 / sqrt(10^5) = 0.0028 of sampling luck (a row without the",
    "  stratified value was judged on these). Where the experiment has m2 reference runs, also that of",
    "  those runs pooled ('more runs': more independent IPM data, a yardstick for the check, not part of",
    "  it); the distance of the centre of mass from the origin (the law is rotation",
    "  invariant); and the core's anisotropy, the largest over the smallest eigenvalue of the second-moment",
    "  matrix of the inner half of the mass, less 1 (`ksdp.metrics.anisotropy`): the mean over pieces of J",
    "  generated particles and over the IPM runs (the replicas and the m2 reference runs), z its excess in",
    "  combined standard errors (flagged above 3).",
    "- At t = 0 of a time experiment, where the law is the initial one (uniform on the unit ball, known",
    "  exactly): the radial KS distance of 10^5 generated particles and of the pooled IPM runs (the initial",
    "  particles: sampling alone) to it, and the generated mass beyond the unit ball (exactly 0), below the",
    "  table.",
    "- folded: the fraction of the source ball on which the learnt map folds (the determinant of its",
    f"  Jacobian <= 0, at {FOLD_POINTS} points); 0 for a map without folds, as the optimal transport map is. Along",
    "  a fold the generated density has caustics, bright lines in the projections.",
    "- structure: what the projection figures show, as a number (`ksdp.metrics.structure_pairs`): each",
    "  coordinate plane binned on a grid of sqrt(J / 10) cells per axis, the two-sample chi-square per degree",
    "  of freedom (about 1 for one law) of J generated particles against an IPM run and of another IPM run",
    "  against it, over disjoint pairs of the independent runs the network did not train on (the replicas",
    "  and the m2 reference runs); the generated value, the IPM's, and z, their excess over its standard",
    "  error from the pairs' spread. An arm, a tilt or a hole carrying a few percent of the mass raises it.",
    "",
    "Acceptance per value: C2ST <= IPM-vs-IPM + {slack} (the mean excess over all pairs where there are more);",
    "energy z <= 3; |m2 DP - m2 IPM| <= max(3%, 2 SE);",
    f"the map folds on at most {FOLD_LIMIT:.0%} of the source (where it was measured); structure z at most",
    f"the one-sided {STRUCTURE_ALPHA:g} / K point of Student's t with pairs - 1 degrees of freedom, K the run's",
    "judged values (`ksdp.metrics.structure_limit`: a generator drawing the IPM's law fails any of them with",
    f"probability at most {STRUCTURE_ALPHA:g}; where measured: at least 4 independent IPM runs at the value).",
]


def _pairs(r) -> str:
    """The C2ST cell's more pairs of IPM runs (`ksdp.metrics.c2st_pairs`) and the mean over all, which is judged."""
    p = r.get("c2st_pairs")
    if p is None:
        return ""
    all_pairs = f"all {r['c2st_checked_pairs']} {r['c2st_checked_excess']:+.3f}"  # as judge() left it
    return f"; {p['pairs']} more pairs {p['excess']:+.3f} +- {p['excess_se']:.3f}; {all_pairs}"


def _fmt_row(r, with_ks, with_structure=False):
    ok = "yes" if passes(r) else "**no**"
    cells = [
        r["kind"],
        f"{r['eta']:g}",
        f"{r['c2st'][0]:.3f} ({r['floor_c2st'][0]:.3f}{_pairs(r)})",
        f"{r['energy'][0]:.2e} +- {r['energy'][1]:.1e} ({r['floor_energy'][0]:.1e})",
        f"{r['energy_z']:.1f}",
        f"{r['w2']:.4f}" + (f" +- {r['w2_se']:.1e}" if "w2_se" in r else "") + f" ({r['w2_floor']:.4f})",
        f"{r['m2_ipm']:.4f}",
        f"{r['m2_dp']:.4f}",
        f"{r['m2_rel_error']:.3f}",
        f"{r['folded'][0]:.3f}" if "folded" in r else "",
    ]
    if with_structure:
        st = r.get("structure")
        limit = f" ({r['structure_limit']:.1f})" if "structure_limit" in r else ""
        cells.append(f"{st['dp']:.3f} ({st['ipm']:.3f}), {st['z']:.1f}{limit}" if st else "")
    if with_ks:
        cells.append(
            f"{r['ks_dp']:.4f}"
            + (f" at F = {r['ks_dp_level']:.2f}" if "ks_dp_level" in r else "")
            + (f"; iid {r['ks_dp_iid']:.4f}" if "ks_dp_iid" in r else "")
            + f" ({r['ks_ipm']:.4f}"
            + (f"; more runs {r['ks_ref_runs']:.4f}" if "ks_ref_runs" in r else "")
            + ")"
            if "ks_dp" in r
            else ""
        )
        cells.append(f"{r['com_dp']:.4f} ({r['com_ipm']:.4f})")
        cells.append(f"{r['aniso_dp']:.3f} ({r['aniso_ipm']:.3f}), {r['aniso_z']:.1f}" if "aniso_z" in r else "")
    return "| " + " | ".join(cells + [ok]) + " |"


def _table(rows, with_ks):
    head = (
        "| kind | eta | C2ST (IPM) | energy +- SE (IPM) | z | W2 +- SE (IPM) | m2 IPM | m2 DP | m2 rel. err | folded |"
    )
    sep = "|---|---|---|---|---|---|---|---|---|---|"
    with_structure = any("structure" in r for r in rows)
    if with_structure:
        head, sep = head + " structure DP (IPM), z (limit) |", sep + "---|"
    if with_ks:
        head = head + " KS DP, where; iid (IPM) | centre of mass DP (IPM) | core anisotropy DP (IPM), z |"
        sep = sep + "---|---|---|"
    return [head + " pass |", sep + "---|"] + [_fmt_row(r, with_ks, with_structure) for r in rows]


def initial_law(rows) -> list:
    """The line under a time experiment's table for its ``t = 0`` row (`evaluate.initial_law_check`), if any."""
    r = next((r for r in rows if "init_ks_dp" in r), None)
    if r is None:
        return []
    return [
        f"At t = 0 (the initial law, uniform on the unit ball): radial KS of {r['init_ks_points']} generated "
        f"particles {r['init_ks_dp']:.4f} at F = {r['init_ks_dp_level']:.2f} (the pooled IPM runs' "
        f"{r['init_ks_ipm']:.4f}); {100 * r['init_beyond_dp']:.2f}% of the generated mass beyond the unit ball, "
        f"the largest radius {r['init_r_max_dp']:.3f}.",
        "",
    ]


def _loadable(out, name):
    """`load_metrics`, or None where the file is missing or damaged."""
    try:
        return load_metrics(out, name)
    except MetricsError:
        return None


def acceptance(m) -> list:
    """Lines naming every failed criterion of one experiment (empty if it passes)."""
    lines = []
    for r in m["rows"]:
        if r["kind"] == "extrapolated":
            continue  # reported, not required
        why = []
        if not r["c2st_ok"]:
            se = r["c2st_checked_se"]  # as judge() left it
            why.append(
                f"C2ST {r['c2st'][0]:.3f} vs IPM {r['floor_c2st'][0]:.3f}"
                + (
                    ""
                    if se is None
                    else f"; excess over {r['c2st_checked_pairs']} pairs {r['c2st_checked_excess']:+.3f} +- {se:.3f}"
                )
            )
        if not r["energy_ok"]:
            why.append(f"energy z = {r['energy_z']:.1f}")
        if "folded" in r and not folded_ok(r):
            why.append(f"the map folds on {100 * r['folded'][0]:.1f}% of the source")
        if not r["m2_ok"]:
            why.append(f"m2 {r['m2_dp']:.4f} vs {r['m2_ipm']:.4f}")
        if not r.get("structure_ok", True):
            st = r["structure"]
            why.append(
                f"projections chi2/df {st['dp']:.3f} vs IPM {st['ipm']:.3f} (excess {st['excess']:+.3f} +- "
                f"{st['excess_se']:.3f}, z = {st['z']:.1f} over {st['pairs']} pairs > {r['structure_limit']:.2f})"
            )
        if why:
            lines.append(f"- {r['kind']} {r['eta']:g}: " + "; ".join(why))
    for r in m["rows"]:
        if "init_ks_dp" in r and r["kind"] != "extrapolated" and r["init_ks_dp"] > r["init_ks_ipm"]:
            lines.append(
                f"- t = 0: radial KS to the initial law {r['init_ks_dp']:.4f} > the IPM's {r['init_ks_ipm']:.4f} "
                f"({100 * r['init_beyond_dp']:.2f}% of the generated mass beyond the unit ball)"
            )
    ks_rows = [r for r in m["rows"] if "ks_dp" in r and r["kind"] != "extrapolated"]
    exp = EXPERIMENTS.get(m.get("settings", {}).get("experiment"))
    over_eps = exp is not None and exp.eta == "eps"  # posed at one time before every blow-up: judged at every eps
    sym = "eps" if over_eps else "t"
    for r in ks_rows:
        if (over_eps or r["eta"] <= KS_UNTIL + 1e-12) and r["ks_dp"] > r["ks_ipm"]:
            lines.append(
                f"- {sym} = {r['eta']:g}: radial KS to the mean field {r['ks_dp']:.4f}"
                + (" (stratified sources)" if r.get("ks_source") == "stratified" else "")
                + f" > the IPM's {r['ks_ipm']:.4f}"
            )
        if r.get("aniso_z", 0.0) > ANISOTROPY_Z:
            lines.append(
                f"- {sym} = {r['eta']:g}: the generated core is less rotation invariant than the IPM's (anisotropy "
                f"{r['aniso_dp']:.3f} against {r['aniso_ipm']:.3f}, z = {r['aniso_z']:.1f})"
            )
        if r["com_dp"] > COM_TOLERANCE:
            lines.append(
                f"- {sym} = {r['eta']:g}: generated centre of mass {r['com_dp']:.3f} from the origin "
                f"(> {COM_TOLERANCE})"
            )
    curve = m.get("m2_curve")
    if ks_rows and curve and not over_eps:  # m2(t) decreasing: the time experiment's
        train = [r["eta"] for r in m["rows"] if r["kind"] == "train"]
        pts = [(e, v) for e, v in zip(curve["eta"], curve["m2_dp"], strict=True) if min(train) <= e <= max(train)]
        rises = [(a[0], b[0]) for a, b in zip(pts, pts[1:], strict=False) if b[1] > a[1]]
        if rises:
            lines.append(
                f"- generated m2(t) rises on {len(rises)} of {len(pts) - 1} steps of the training range "
                f"(first between t = {rises[0][0]:.4f} and {rises[0][1]:.4f})"
            )
    if m.get("memorises"):
        lines.append(
            f"- final training loss {_pm(m, 'final_loss')} is below the squared W2 floor of its mini-batch size "
            f"({_pm(m, 'loss_floor')}{_z(m)}): the network fits its mini-batches closer than a fresh sample would"
        )
    return lines


def command(out: str, names, scale: str, m: dict | None) -> str:
    """The CLI command that wrote these results, with the options its metrics record (``m``:
    one experiment's metrics.json) where they differ from the defaults; ``out`` is the run folder,
    ``<OUT>/<scale>``."""
    parts = ["python -m ksdp.experiments", *names, "--scale", scale]
    s = (m or {}).get("settings", {})
    if s.get("n_particles", SCALES[scale].n_particles) != SCALES[scale].n_particles:
        parts += ["--particles", str(s["n_particles"])]
    if (
        "drift" in s
        and s["drift"]
        != drifts.resolve_drift("auto", None, s["n_particles"], EXPERIMENTS[m.get("experiment", names[0])].d, "blob")[0]
    ):
        parts += ["--drift", s["drift"]]
    if s.get("seed", 0) != 0:
        parts += ["--seed", str(s["seed"])]
    parent = os.path.dirname(os.path.normpath(out))
    if parent != "ksdp-runs":
        parts += ["--out", parent]
    return " ".join(parts)


def _fmt(x, spec=".4g"):
    return "-" if x is None else format(x, spec)


def _pm(m: dict, key: str) -> str:
    """``m[key]`` with its standard error ``m[key + '_se']`` where recorded (older runs have none)."""
    se = m.get(key + "_se")
    return f"{m[key]:.4g}" + ("" if se is None else f" +- {se:.2g}")


def _z(m: dict) -> str:
    return "" if m.get("loss_z") is None else f", z = {m['loss_z']:.1f}"


def devices(m: dict) -> str:
    """Where the stage times of a run were measured: one device, or each stage's (``"not recorded"``
    for runs before the devices were)."""
    stages = {
        "ipm_s": "IPM",
        "pool_s": "pool",
        "reference_s": "reference runs",
        "train_s": "training",
        "eval_s": "evaluation",
        "figures_s": "figures",
    }
    dev = m.get("timing_device") or {}
    named = {k: dev.get(k) or "not recorded" for k in stages if k in m.get("timing_s", {})}
    if len(set(named.values())) <= 1:
        return next(iter(named.values()), "not recorded")
    groups = {}  # device -> its stages, in the order the stages run
    for k, v in named.items():
        groups.setdefault(v, []).append(stages[k])
    return "; ".join(f"{', '.join(g)}: {v}" for v, g in groups.items())


def _section(name: str, m: dict):
    """One experiment's part of `render`: ``(its table lines, its settings row, its manifest line(s),
    its verdict lines)``."""
    lines = [f"## {name}", ""] + _table(m["rows"], "ks_dp" in m["rows"][0]) + [""] + initial_law(m["rows"])
    if not m.get("complete", True):
        lines += ["(evaluation incomplete: the rows above are those computed before the failure)", ""]
    s, t = m["settings"], m["timing_s"]
    pool = f" (pool {s['pool_runs']} x {s['n_particles']})" if s.get("pool_runs") else ""
    if s.get("reference_runs"):
        pool += f" (m2 also over {s['reference_runs']} more runs)"
    ipm_s = t.get("ipm_s", 0) + t.get("pool_s", 0) + t.get("reference_s", 0)
    row = (
        f"| {name} | {s['n_particles']}{pool} | {m['scale_settings']['n_samples']} | "
        f"{m['scale_settings']['n_steps']} | {m['n_parameters']} | {_pm(m, 'final_loss')} | "
        f"{_fmt(m.get('fresh_batch_loss'))} | {_pm(m, 'loss_floor')} | {_fmt(m.get('loss_z'), '.1f')} | "
        f"{ipm_s:.0f} | "
        f"{t.get('train_s', 0):.0f} | {t.get('eval_s', 0):.0f} | {t.get('figures_s', 0):.0f} | {devices(m)} |"
    )
    manifest = [f"- {name}: {provenance.summary(m['manifest'])}"] if m.get("manifest") else []
    bad = acceptance(m)
    verdict = [f"- {name}: " + ("passes." if not bad else "fails:")] + ["  " + b for b in bad]
    return lines, row, manifest, verdict


def render(
    out: str, scale: str, names, failures: dict, seconds: float, *, shown: str | None = None, figures: str | None = None
) -> str:
    """``REPORT.md`` of the runs under ``out``; ``shown`` is the run folder the text names (default ``out``:
    the documentation renders its copy of a run as the default folder it ran in). With ``figures``, a
    path prefix, each experiment's section shows its figures ``<figures><name>-<figure>``."""
    shown = out if shown is None else shown
    lines = [
        f"# ksdp experiments: scale `{scale}`",
        "",
        f"Command: `{command(shown, names, scale, next(filter(None, (_loadable(out, n) for n in names)), None))}`; "
        + (
            f"wall time {seconds:.0f} s."
            if seconds is not None
            else "assembled from each run's metrics.json (`--report-only`); stage times below."
        ),
        "",
        *[t.format(slack=C2ST_SLACK[scale]) for t in METRICS_TEXT],
        "",
    ]
    settings, verdicts, manifests = [], [], []
    failures = dict(failures)
    for name in names:
        try:
            m = load_metrics(out, name)
        except MetricsError as e:
            m, failures[name] = None, failures.get(name, str(e))
        if name in failures or m is None:
            lines += [f"## {name}: FAILED", "", failures.get(name, "no metrics"), ""]
            verdicts.append(f"- {name}: FAILED ({failures.get(name, 'no metrics')})")
            continue
        try:
            section, row, manifest, verdict = _section(name, m)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:  # a field a table needs
            why = f"its metrics.json lacks what the report needs ({type(e).__name__}: {e})"
            lines += [f"## {name}: FAILED", "", why, ""]
            verdicts.append(f"- {name}: FAILED ({why})")
            continue
        lines += section
        if figures is not None:
            lines += [f"![{name}: {f[:-4].replace('_', ' ')}]({figures}{name}-{f})" for f in FIGURES] + [""]
        settings.append(row)
        manifests += manifest
        verdicts += verdict
    lines += [
        "## Settings and stage times (s)",
        "",
        "| experiment | J | N | steps | parameters | final loss | fresh-batch loss | loss floor | z | IPM | train "
        "| eval | figures | device |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *settings,
        "",
        "Final loss: the mean loss of the last 20 mini-batches, +- its standard error (earlier runs: the "
        "mean of the last 100 steps, without one); fresh-batch loss: at the first step of each of them, "
        "before any step on its points; loss floor: W2^2 between two disjoint N-point samples of a training "
        f"set, {FLOOR_REPEATS} pairs per set; z = (final - floor) / combined SE, memorisation below "
        f"-{MEMORISATION_Z:g}.",
        "",
        "## Acceptance (training and held-out values; extrapolation is reported, not required)",
        "",
        *verdicts,
        "",
        *(["## Manifests", "", *manifests, ""] if manifests else []),
    ]
    if figures is None:  # shown in each section otherwise
        lines += ["Figures: `<experiment>/projections.png`, `second_moment.png`, `loss.png`.", ""]
    return "\n".join(lines)


def render_experiment(out: str, name: str, scale: str, figures: str = ".", *, shown: str | None = None) -> str:
    """A page for one experiment: what it tests, its settings, every metric, and its figures.

    ``shown`` is the run folder the page names (default ``out``).

    ``figures`` is the folder (relative to the page) holding ``projections.png``,
    ``second_moment.png`` and ``loss.png``; a folder ending in ``-`` is used as a file-name prefix
    (``docs/figures/ks2d-time-projections.png``).
    """
    m = load_metrics(out, name)
    shown = out if shown is None else shown
    exp, s, sc = EXPERIMENTS[name], m["settings"], m["scale_settings"]
    fig = (lambda f: f"{figures}{f}") if figures.endswith("-") else (lambda f: f"{figures}/{f}")
    what = {
        "time": "time t",
        "amplitude": "flow amplitude A (the network sees log10 A)",
        "eps": "the chemical's time scale eps (the network sees log10 eps)",
    }[exp.eta]
    fixed = f"flow amplitude A = {exp.fixed:g}" if exp.eta == "time" else f"time t = {exp.fixed:g}"
    bad = acceptance(m)
    loss_name = "the debiased loss" if sc.get("debias") else "the paper's loss"
    if sc.get("debias") and sc.get("local_cap"):
        loss_name += f" (self pairs also capped at {sc['local_cap']:g} times their median)"
    if sc.get("match_sources"):
        loss_name += ", the sources (not the generated points) matched to the targets"
    if sc.get("tail_feature"):
        loss_name += "; the network also sees the source point's tail coordinate -log(1 - |x|^d)"
    if sc.get("identity_at") is not None:
        power = sc.get("identity_power", 1.0)  # the square root (0.5) in runs before the linear factor was kept
        name_ = "t" if exp.eta == "time" else "eta"
        at = sc["identity_at"]
        factor = f"{name_} / scale" if exp.eta == "time" and at == 0 else f"|{name_} - {at:g}| / scale"
        factor = f"({factor})" + ("" if power == 1 else f"^{power:g}")
        loss_name += f"; the map is the identity at {name_} = {at:g} by construction, x + {factor} MLP"
    if sc.get("proportional"):
        loss_name += (
            f"; the map is x + MLP_0 + ({exp.symbol} / {exp.symbol}_max) MLP_1, one head growing with {exp.symbol}"
        )
    if sc.get("radial_weight"):
        loss_name += (
            f"; plus {sc['radial_weight']:g} times the one-dimensional transport of the generated distances "
            "|f(x)| onto the training set's radial quantiles"
        )
    lines = [
        f"# {name} (paper Sec. {exp.section})",
        "",
        f"{exp.summary}.",
        "",
        f"Command: `{command(shown, [name], scale, m)}` (outputs in `{os.path.join(os.path.normpath(shown), name)}/`).",
        "",
        f"- d = {exp.d}, flow `{exp.flow}`, {fixed}; learnt parameter: {what}.",
        f"- IPM: J = {s['n_particles']}, kernel `{s['kernel']}`, delta^2 = {s['delta'] ** 2:.3g}, "
        f"dt = {s['dt']:g}, chi = mu = 1, M = 16 pi, uniform initial law on the unit ball"
        + (
            f"; the network trains on a pool of {s['pool_runs']} more runs of J = {s['n_particles']} per training "
            "value (their own key; the reference and floor runs are not in it)."
            if s.get("pool_runs")
            else "."
        ),
        f"- Training values {', '.join(f'{v:g}' for v in s['train'])}; held out "
        f"{', '.join(f'{v:g}' for v in s['held_out'])}; extrapolated {', '.join(f'{v:g}' for v in s['extrapolated'])}.",
        f"- Network {sc['depth']} x {sc['width']} ({m['n_parameters']} parameters); N = {sc['n_samples']}, "
        f"{sc['n_steps']} Adam steps (lr {sc['learning_rate']:g}), K = {sc['resample_every']}, "
        f"L = {sc['renew_every']}, {loss_name}; final loss "
        f"{_pm(m, 'final_loss')} ("
        + ("mean of the last 20 mini-batches" if "final_loss_se" in m else "mean of the last 100 steps")
        + f"; {_fmt(m.get('fresh_batch_loss'))} at the first step "
        f"of the last 20 mini-batches, before any step on their points) against a floor of {_pm(m, 'loss_floor')}"
        f"{_z(m)} (W2^2 between two independent N-point samples of one training set).",
        f"- Stage times (s): IPM {m['timing_s']['ipm_s']:.0f}"
        + (f", training pool {m['timing_s']['pool_s']:.0f}" if "pool_s" in m["timing_s"] else "")
        + f", training {m['timing_s']['train_s']:.0f}, "
        f"evaluation {m['timing_s'].get('eval_s', 0):.0f} (device: {devices(m)}).",
        *([f"- Manifest: {provenance.summary(m['manifest'])}."] if m.get("manifest") else []),
        "",
        "## Metrics",
        "",
        *[t.format(slack=C2ST_SLACK[scale]) for t in METRICS_TEXT],
        "",
        *_table(m["rows"], "ks_dp" in m["rows"][0]),
        "",
        *initial_law(m["rows"]),
        "Acceptance: " + ("every training and held-out value passes." if not bad else "fails:"),
        *([""] + bad if bad else []),
        "",
        "## Figures",
        "",
        f"![projections]({fig('projections.png')})",
        "",
        f"![second moment]({fig('second_moment.png')})",
        "",
        f"![loss]({fig('loss.png')})",
        "",
    ]
    return "\n".join(lines)


FIGURES = ("projections.png", "second_moment.png", "loss.png")


def docs_pages(docs: str, scale: str, names) -> dict:
    """The generated documentation pages of one scale, rendered from the metrics.json files kept under
    ``<docs>/runs/<scale>/<experiment>/`` (`write_docs` copies them there): ``{path under docs: text}``.

    The quick scale has a page per experiment (``experiments/<name>.md``, its figures
    ``figures/<name>-*.png``) and ``quick-report.md``; other scales their report, ``<scale>-report.md``.
    Everything on them comes from those files, so they regenerate exactly (``tests/test_docs.py``).
    """
    runs = os.path.join(docs, "runs", scale)
    shown = os.path.join("ksdp-runs", scale)  # where the runs were made: the CLI's default folder
    names = [n for n in names if _loadable(runs, n) is not None]
    # the quick scale's figures are on its experiments' pages; another scale's on its report
    figures = None if scale == "quick" else f"figures/{scale}/"
    pages = {f"{scale}-report.md": render(runs, scale, names, {}, None, shown=shown, figures=figures)}
    if scale == "quick":
        for name in names:
            pages[os.path.join("experiments", f"{name}.md")] = render_experiment(
                runs, name, scale, figures=f"../figures/{name}-", shown=shown
            )
    return pages


def figure_path(docs: str, scale: str, name: str, figure: str) -> str:
    """Where the documentation keeps one figure of a run: ``figures/<name>-<figure>`` at the quick scale,
    ``figures/<scale>/<name>-<figure>`` at the others."""
    folder = os.path.join(docs, "figures") if scale == "quick" else os.path.join(docs, "figures", scale)
    return os.path.join(folder, f"{name}-{figure}")
