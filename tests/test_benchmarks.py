"""The benchmark suite's reporting on a committed result: the table and figures build from it.

(The benchmarks themselves are not run here: `python -m benchmarks` takes ~5 minutes.)
"""

import glob
import json
import os

import pytest

from benchmarks import __main__ as suite

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALONE = suite.SCRIPTS + ("ablations", "assignment")  # scripts that write <name>-<device>-<date>.json
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
    assert set(payload["benchmarks"]) == set(suite.SCRIPTS)
    rows = suite.summary(payload["benchmarks"], payload["environment"]["device"])
    assert [r[0] for r in rows] == [r["what"] for r in payload["summary"]]
    figures = suite.plot(payload["benchmarks"], str(tmp_path / "x"))
    names = ["x-ipm.png", "x-particle_mesh.png", "x-scaling.png", "x-transport.png"]
    assert sorted(os.path.basename(f) for f in figures) == names
    assert all(os.path.getsize(f) > 10_000 for f in figures)
