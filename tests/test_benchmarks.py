"""The benchmark suite's reporting on a committed result: the table and figures build from it.

(The benchmarks themselves are not run here: `python -m benchmarks` takes ~5 minutes.)
"""

import glob
import json
import os

import pytest

from benchmarks import __main__ as suite

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALONE = suite.SCRIPTS + ("ablations", "assignment", "chemical")  # scripts that write <name>-<device>-<date>.json
COMBINED = sorted(
    p
    for p in glob.glob(os.path.join(ROOT, "benchmarks", "results", "*.json"))
    # a script's own file is <name>-<device>-<date>.json (particle_mesh writes particle-mesh-...)
    if not os.path.basename(p).startswith(tuple(n.replace("_", "-") + "-" for n in ALONE))
)


def test_a_combined_result_is_committed():
    assert COMBINED, "no benchmarks/results/<device>-<date>.json: run python -m benchmarks"


@pytest.mark.parametrize("path", COMBINED, ids=os.path.basename)
def test_summary_and_figures_rebuild(path, tmp_path):
    with open(path) as f:
        payload = json.load(f)
    assert payload["command"].startswith("python -m benchmarks")
    # every script, or those of --only / --collect (one GPU has no scaling run)
    present = set(payload["benchmarks"])
    assert present and present <= set(suite.SCRIPTS), present
    rows = suite.summary(payload["benchmarks"], payload["environment"]["device"])
    assert [r[0] for r in rows] == [r["what"] for r in payload["summary"]]
    figures = suite.plot(payload["benchmarks"], str(tmp_path / "x"))
    names = [f"x-{n}.png" for n in ("ipm", "particle_mesh", "scaling", "transport") if n in present]
    assert sorted(os.path.basename(f) for f in figures) == names
    assert all(os.path.getsize(f) > 10_000 for f in figures)


def test_collect_takes_one_file_per_script_from_one_device_and_date():
    res = os.path.join(ROOT, "benchmarks", "results")
    gpu = [os.path.join(res, f"{n}-NVIDIA-H100-80GB-HBM3-2026-11-26.json") for n in ("ipm", "train")]
    env, results = suite.collect(gpu)
    assert set(results) == {"ipm", "train"} and env["device"] == "NVIDIA-H100-80GB-HBM3"
    with pytest.raises(SystemExit, match="one device"):
        suite.collect([gpu[0], os.path.join(res, "train-cpu-2core-x86_64-2026-11-25.json")])
    with pytest.raises(SystemExit, match="one file per script"):
        suite.collect([gpu[0], gpu[0]])
    with pytest.raises(SystemExit, match="not a result of"):
        suite.collect([os.path.join(res, "assignment-cpu-2core-x86_64-2026-11-26.json")])


def test_shell_shape_sees_mass_and_elongation_by_radius():
    # the 'structure-shells' study: a uniform ellipse of semi-axes 0.75 and 0.5 about (5, -3) has the aspect
    # 1.5 (its covariance is diag(a^2, b^2) / 4), wherever it sits; with n = 10^5 points each variance is
    # within about 0.5% (its relative standard error, sqrt(2 / n) and the law's kurtosis), the aspect within 2%
    import numpy as np

    from benchmarks.studies.structure import shell_shape

    rng = np.random.default_rng(0)
    r, t = np.sqrt(rng.uniform(size=100_000)), rng.uniform(0, 2 * np.pi, 100_000)
    x = np.stack([0.75 * r * np.cos(t) + 5.0, 0.5 * r * np.sin(t) - 3.0], 1)
    whole = shell_shape(x, edges=(0.0, 10.0))
    assert whole[0, 0] == 1.0 and abs(whole[0, 1] / 1.5 - 1) < 0.02
    # shells: the mass fractions add up to what lies inside the outermost edge; a shell outside is empty
    shells = shell_shape(x, edges=(0.0, 0.3, 0.6, 1.0, 2.0))
    assert np.isclose(shells[:, 0].sum(), 1.0) and shells[-1, 0] == 0.0 and np.isnan(shells[-1, 1])
    assert shells[0, 1] < shells[1, 1]  # inside r = 0.3 the ellipse is a disc; its outer ring is elongated
