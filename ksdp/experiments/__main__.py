"""Interim main job: a short IPM demo (2D, no flow, the paper's supercritical mass).

Prints the second moment against the exact line m2(0) - 4t and saves a figure of the aggregation.
"""
import os
import sys

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import ksdp  # noqa: E402


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "ksdp-runs"
    os.makedirs(out, exist_ok=True)
    times = np.round(np.arange(0, 11) * 0.01, 6)
    traj = ksdp.simulate(jax.random.key(0), ksdp.Params(), times, n_particles=4000)
    m2 = np.asarray(ksdp.second_moment(traj.particles))
    for t, m in zip(times, m2):
        print(f"t={t:.2f}  m2={m:.4f}  exact line={m2[0] - 4 * t:.4f}")
    fig, ax = plt.subplots(1, 3, figsize=(12, 4))
    for a, i in zip(ax, (0, 5, 10)):
        p = np.asarray(traj.particles[i])
        a.hist2d(p[:, 0], p[:, 1], bins=80, range=[[-1, 1], [-1, 1]])
        a.set_title(f"t = {times[i]:.2f}")
        a.set_aspect("equal")
    fig.savefig(os.path.join(out, "ipm_demo.png"), dpi=100)
    print(f"wrote {os.path.join(out, 'ipm_demo.png')}")


if __name__ == "__main__":
    main()
