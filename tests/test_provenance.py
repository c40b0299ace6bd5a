"""Prose that stays true: no run diary in the package, its help, the README or the hand-written docs.

Where and how a number was measured belongs with the number, in a benchmark's or a run's JSON and
its manifest; history belongs in git and ``CHANGELOG.md``. A sentence carrying a date, a machine
("2-core CPU", "H100"), a past run's timing ("in 689 s") or a "throwaway script" is true only of the
run it describes, so this test fails on each of them in the places a user reads as documentation.
Generated pages (the experiments' reports) are exempt: they are rebuilt from a run's files.
"""

import glob
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# pages the experiments CLI writes (rebuilt from the runs' files, manifest included)
GENERATED = re.compile(r"docs/(experiments/.*|.*report.*)\.md$")

MARKERS = {
    "an ISO date": r"\b20\d\d-[01]\d-[0-3]\d\b",
    "a core count": r"\b(\d+|one|two|four|eight|sixteen)[- ]cores?\b",
    "a throwaway script": r"\bthrowaway\b",
    "a machine": r"\b(H100|H200|A100|MI300)\b",
    # a number with a unit of time: a measured duration (math such as s^{...} is not one)
    "a timing": r"(?<![\^_{\w.])\d+(\.\d+)?\s?(ms|us|µs|s|sec|seconds?|min|minutes?|hours?)\b(?![\^{(])",
}
PATTERN = re.compile("|".join(f"(?P<m{i}>{p})" for i, p in enumerate(MARKERS.values())), re.I)
NAMES = list(MARKERS)


def markers(text: str) -> list:
    """``(line number, kind, match)`` of every provenance marker in ``text``."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        for m in PATTERN.finditer(line):
            kind = NAMES[int(next(k for k, v in m.groupdict().items() if v is not None)[1:])]
            out.append((n, kind, m.group(0)))
    return out


def _sources():
    files = glob.glob(os.path.join(ROOT, "ksdp", "**", "*.py"), recursive=True)
    files += [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "pyproject.toml")]
    docs = glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True)
    files += [p for p in docs if not GENERATED.search(os.path.relpath(p, ROOT).replace(os.sep, "/"))]
    return sorted(files)


def test_the_markers_are_found_and_math_is_not():
    found = {
        kind
        for _, kind, _ in markers(
            "run on 2026-11-28\non a 2-core CPU\na throwaway script\none H100\n689 s in all, 3.5 minutes\n"
        )
    }
    assert found == set(MARKERS)
    assert markers(r"\partial_t Q = \mu d^2 s^{2 - 2/d}, dt = 1e-4, 50000 steps, J = 10^6, t = 0.1") == []


@pytest.mark.parametrize("path", _sources(), ids=lambda p: os.path.relpath(p, ROOT))
def test_no_provenance_markers(path):
    found = markers(open(path, encoding="utf-8").read())
    assert found == [], f"{os.path.relpath(path, ROOT)}: move these to a result's JSON or CHANGELOG.md: {found}"


def test_no_provenance_markers_in_the_cli_help():
    help_text = subprocess.run(
        [sys.executable, "-m", "ksdp.experiments", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    ).stdout
    assert "usage:" in help_text
    assert markers(help_text) == []


# the hand-written docs explain what each method is and why it was chosen; results and their history
# live in generated pages, study JSON and CHANGELOG.md. A budget keeps them that way: prose outside
# fenced code blocks, all hand-written pages together
DOCS_PROSE_BYTES = 60_000


def _prose_bytes(text: str) -> int:
    return len(re.sub(r"```.*?```", "", text, flags=re.S).encode("utf-8"))


def test_hand_written_docs_stay_within_their_budget():
    assert _prose_bytes("a\n```python\nx = 1\n```\nb") == len("a\n\nb")
    pages = [p for p in _sources() if p.endswith(".md") and os.sep + "docs" + os.sep in p]
    assert len(pages) >= 10, pages
    total = sum(_prose_bytes(open(p, encoding="utf-8").read()) for p in pages)
    assert total <= DOCS_PROSE_BYTES, f"hand-written docs hold {total} bytes of prose, over {DOCS_PROSE_BYTES}"
