"""``OUT/REPORT.md``: one table of every experiment's metrics, with settings and stage times."""

from __future__ import annotations

import json
import os

from ksdp.experiments.specs import EXPERIMENTS


def render(out: str, scale: str, names, failures: dict, seconds: float) -> str:
    lines = [
        f"# ksdp experiments: scale `{scale}`",
        "",
        f"Command: `python -m ksdp.experiments {' '.join(names)} --scale {scale}`; wall time {seconds:.0f} s.",
        "",
        "W2: between generated and independent IPM particles (n = n_eval each); floor: W2 between two",
        "independent IPM runs of the same size; ratio = W2 / floor (1 is as good as the IPM itself).",
        "",
    ]
    lines += [
        "| experiment | kind | eta | W2 | floor | ratio | m2 IPM | m2 DP | m2 rel. err |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    settings = []
    for name in names:
        path = os.path.join(out, name, "metrics.json")
        if name in failures or not os.path.exists(path):
            lines.append(f"| {name} | FAILED | | | | | | | {failures.get(name, 'no metrics')} |")
            continue
        with open(path) as f:
            m = json.load(f)
        for r in m["rows"]:
            lines.append(
                f"| {name} | {r['kind']} | {r['eta']:g} | {r['w2']:.4f} | {r['w2_floor']:.4f} | "
                f"{r['ratio']:.2f} | {r['m2_ipm']:.4f} | {r['m2_dp']:.4f} | {r['m2_rel_error']:.3f} |"
            )
        s, t = m["settings"], m["timing_s"]
        settings.append(
            f"| {name} | {s['n_particles']} | {m['scale_settings']['n_samples']} | "
            f"{m['scale_settings']['n_steps']} | {m['n_parameters']} | {m['final_loss']:.4g} | "
            f"{m['max_ratio']['held-out']:.2f} | {t['ipm_s']:.0f} | {t['train_s']:.0f} | "
            f"{t['eval_s']:.0f} | {t['figures_s']:.0f} |"
        )
    lines += [
        "",
        "## Settings and stage times (s)",
        "",
        "| experiment | J | N | steps | parameters | final loss | max held-out ratio | IPM | train | eval | figures |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ] + settings
    misses = []
    for name in names:
        path = os.path.join(out, name, "metrics.json")
        if os.path.exists(path) and name not in failures:
            with open(path) as f:
                r = json.load(f)["max_ratio"]["held-out"]
            if r > 2:
                misses.append(f"- {name}: held-out W2/floor = {r:.2f} > 2.")
    lines += ["", "## Held-out criterion (ratio <= 2)", ""] + (misses or ["All experiments meet it."])
    lines += ["", "Figures: `<experiment>/projections.png`, `second_moment.png`, `loss.png`.", ""]
    return "\n".join(lines)


def render_experiment(out: str, name: str, scale: str, figures: str = ".") -> str:
    """A page for one experiment: what it tests, its settings, every metric, and its figures.

    ``figures`` is the folder (relative to the page) holding ``projections.png``,
    ``second_moment.png`` and ``loss.png``; a folder ending in ``-`` is used as a file-name prefix
    (``docs/figures/ks2d-time-projections.png``).
    """
    with open(os.path.join(out, name, "metrics.json")) as f:
        m = json.load(f)
    exp, s, sc = EXPERIMENTS[name], m["settings"], m["scale_settings"]
    fig = (lambda f: f"{figures}{f}") if figures.endswith("-") else (lambda f: f"{figures}/{f}")
    what = "time t" if exp.eta == "time" else "flow amplitude A (the network sees log10 A)"
    fixed = f"flow amplitude A = {exp.fixed:g}" if exp.eta == "time" else f"time t = {exp.fixed:g}"
    lines = [
        f"# {name} (paper Sec. {exp.section})",
        "",
        f"{exp.summary}.",
        "",
        f"Command: `python -m ksdp.experiments {name} --scale {scale}` (outputs in `ksdp-runs/{scale}/{name}/`).",
        "",
        f"- d = {exp.d}, flow `{exp.flow}`, {fixed}; learnt parameter: {what}.",
        f"- IPM: J = {s['n_particles']}, kernel `{s['kernel']}`, delta^2 = {s['delta'] ** 2:.3g}, "
        f"dt = {s['dt']:g}, chi = mu = 1, M = 16 pi, uniform initial law on the unit ball.",
        f"- Training values {', '.join(f'{v:g}' for v in s['train'])}; held out "
        f"{', '.join(f'{v:g}' for v in s['held_out'])}; extrapolated {', '.join(f'{v:g}' for v in s['extrapolated'])}.",
        f"- Network {sc['depth']} x {sc['width']} ({m['n_parameters']} parameters); N = {sc['n_samples']}, "
        f"{sc['n_steps']} Adam steps (lr {sc['learning_rate']:g}), K = {sc['resample_every']}, "
        f"L = {sc['renew_every']}; final loss {m['final_loss']:.4g}.",
        f"- Stage times (s): IPM {m['timing_s']['ipm_s']:.0f}, training {m['timing_s']['train_s']:.0f}, "
        f"evaluation {m['timing_s']['eval_s']:.0f}.",
        "",
        "## Metrics",
        "",
        "W2 between generated and independent IPM particles; floor: W2 between two independent IPM runs of "
        "the same size; ratio = W2 / floor (1 means as close as a second IPM run).",
        "",
        "| kind | eta | W2 | floor | ratio | m2 IPM | m2 DP | m2 rel. err |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in m["rows"]:
        lines.append(
            f"| {r['kind']} | {r['eta']:g} | {r['w2']:.4f} | {r['w2_floor']:.4f} | {r['ratio']:.2f} | "
            f"{r['m2_ipm']:.4f} | {r['m2_dp']:.4f} | {r['m2_rel_error']:.3f} |"
        )
    mr = m["max_ratio"]
    lines += [
        "",
        f"Largest ratio: training {mr['train']:.2f}, held-out {mr['held-out']:.2f}, "
        f"extrapolated {mr['extrapolated']:.2f}.",
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
