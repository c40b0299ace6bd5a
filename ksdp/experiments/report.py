"""``OUT/REPORT.md``: one table of every experiment's metrics, with settings and stage times."""
from __future__ import annotations

import json
import os


def render(out: str, scale: str, names, failures: dict, seconds: float) -> str:
    lines = [f"# ksdp experiments: scale `{scale}`", "",
             f"Command: `python -m ksdp.experiments {' '.join(names)} --scale {scale}`; wall time {seconds:.0f} s.",
             "", "W2: between generated and independent IPM particles (n = n_eval each); floor: W2 between two",
             "independent IPM runs of the same size; ratio = W2 / floor (1 is as good as the IPM itself).", ""]
    lines += ["| experiment | kind | eta | W2 | floor | ratio | m2 IPM | m2 DP | m2 rel. err |",
              "|---|---|---|---|---|---|---|---|---|"]
    settings = []
    for name in names:
        path = os.path.join(out, name, "metrics.json")
        if name in failures or not os.path.exists(path):
            lines.append(f"| {name} | FAILED | | | | | | | {failures.get(name, 'no metrics')} |")
            continue
        with open(path) as f:
            m = json.load(f)
        for r in m["rows"]:
            lines.append(f"| {name} | {r['kind']} | {r['eta']:g} | {r['w2']:.4f} | {r['w2_floor']:.4f} | "
                         f"{r['ratio']:.2f} | {r['m2_ipm']:.4f} | {r['m2_dp']:.4f} | {r['m2_rel_error']:.3f} |")
        s, t = m["settings"], m["timing_s"]
        settings.append(f"| {name} | {s['n_particles']} | {m['scale_settings']['n_samples']} | "
                        f"{m['scale_settings']['n_steps']} | {m['n_parameters']} | {m['final_loss']:.4g} | "
                        f"{m['max_ratio']['held-out']:.2f} | {t['ipm_s']:.0f} | {t['train_s']:.0f} | "
                        f"{t['eval_s']:.0f} | {t['figures_s']:.0f} |")
    lines += ["", "## Settings and stage times (s)", "",
              "| experiment | J | N | steps | parameters | final loss | max held-out ratio | IPM | train | eval | figures |",
              "|---|---|---|---|---|---|---|---|---|---|---|"] + settings
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
