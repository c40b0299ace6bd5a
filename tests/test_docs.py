"""The documentation runs: every Python block of README.md and docs/ is executed, shell commands
name real modules and options, the multi-host recipe runs as two processes, and the site (API
reference included) builds with ``mkdocs build --strict``.

Each page's Python blocks run in order as one script in a fresh interpreter (so a page may set
XLA_FLAGS before importing JAX, as docs/scaling.md does). A block whose first line is
``# file: NAME`` is a file for the reader to save, not a step: it is written out and run by a
dedicated test.
"""

import glob
import importlib.util
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = sorted([os.path.join(ROOT, "README.md")] + glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(path, lang):
    with open(path) as f:
        return [body for kind, body in FENCE.findall(f.read()) if kind == lang]


def files(path):
    return {
        b.split("\n", 1)[0][len("# file: ") :].strip(): b for b in blocks(path, "python") if b.startswith("# file: ")
    }


def env():
    e = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    e.pop("XLA_FLAGS", None)  # a page sets its own
    return e


RUNNABLE = [p for p in PAGES if any(not b.startswith("# file: ") for b in blocks(p, "python"))]


@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE, ids=lambda p: os.path.relpath(p, ROOT))
def test_python_blocks_run(page, tmp_path):
    script = "\n\n".join(b for b in blocks(page, "python") if not b.startswith("# file: "))
    path = tmp_path / "page.py"
    path.write_text(script)
    run = subprocess.run(
        [sys.executable, str(path)], cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, f"{os.path.relpath(page, ROOT)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}"


def test_every_page_with_code_is_checked():
    # pages whose Python blocks are all files must have a test that runs them (the multi-host one)
    only_files = [os.path.relpath(p, ROOT) for p in PAGES if blocks(p, "python") and p not in RUNNABLE]
    assert only_files == [], only_files
    assert "multihost.py" in files(os.path.join(ROOT, "docs", "scaling.md"))


def shell_modules():
    """``{module: {options}}`` over every ``python -m`` command in a bash block or inline code."""
    found = {}
    for page in PAGES:
        text = open(page).read()
        cmds = [line for b in blocks(page, "bash") for line in b.splitlines()]
        cmds += re.findall(r"`(python -m [^`]+)`", text)
        for c in cmds:
            if "python -m" not in c:
                continue
            words = c.split("python -m", 1)[1].split("#")[0].split("&&")[0].split(">")[0].split()
            found.setdefault(words[0], set()).update(w.split("=")[0] for w in words[1:] if w.startswith("--"))
    found.pop("pytest", None)
    return found


@pytest.mark.slow
@pytest.mark.parametrize("module,options", sorted((m, sorted(o)) for m, o in shell_modules().items()))
def test_shell_commands_name_real_modules_and_options(module, options):
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"the docs run `python -m {module}`, which does not exist"
    if spec.submodule_search_locations:  # a package: needs __main__
        assert importlib.util.find_spec(module + ".__main__"), f"{module} has no __main__"
    if options:
        help_text = subprocess.run(
            [sys.executable, "-m", module, "--help"], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120
        ).stdout
        missing = [o for o in options if o not in help_text]
        assert not missing, f"the docs pass {missing} to `python -m {module}`, whose --help lacks them"


@pytest.mark.slow
def test_site_builds_strict(tmp_path):
    # mkdocs-material + mkdocstrings: every page, the API reference generated from the docstrings, and
    # every link between pages; --strict turns each warning (a broken link, a docstring parameter that
    # is not in the signature) into a failure. The build reads only local files.
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=dict(env(), NO_MKDOCS_2_WARNING="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for door in ("ksdp.ipm.simulate", "ksdp.wasserstein.w2", "ksdp.training.train", "ksdp.model.generate"):
        assert f'id="{door}"' in api, f"{door} is missing from the API reference"
    assert 'class="arithmatex"' in api  # the docstrings' math reaches the page as math


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_multihost_recipe_two_processes(tmp_path):
    script = tmp_path / "multihost.py"
    script.write_text(files(os.path.join(ROOT, "docs", "scaling.md"))["multihost.py"])
    e = dict(env(), XLA_FLAGS="--xla_force_host_platform_device_count=2")
    address = f"127.0.0.1:{_free_port()}"
    out = tmp_path / "data.npz"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), address, "2", str(i)] + ([str(out)] if i == 0 else []),
            cwd=tmp_path,
            env=e,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (so, se) in zip(procs, results, strict=True):
        assert p.returncode == 0, so[-2000:] + se[-4000:]
    assert "2 processes, 4 devices" in results[0][0], results[0][0]

    import jax
    import jax.numpy as jnp

    import ksdp

    amplitudes = jnp.array([1.0, 10.0, 30.0, 100.0])
    one = ksdp.make_dataset(jax.random.key(0), ksdp.Params(flow=amplitudes), (0.02,), n_particles=512, flow="laminar2d")
    two = ksdp.load_dataset(str(out))
    # the same per-run program on either side: 200 steps, at most 1 ulp of |x| each
    np.testing.assert_allclose(two.particles, one.particles, rtol=0, atol=200 * 2**-23 * np.abs(one.particles).max())
    res = ksdp.train(
        jax.random.key(1),
        one.particles[:, -1],
        amplitudes,
        ksdp.make_config(2, amplitudes, eta_log=True),
        ksdp.TrainConfig.paper(n_samples=256, resample_every=100, renew_every=50),
        n_steps=200,
        progress=False,
    )
    loss = float(re.search(r"final loss ([0-9.e-]+)", results[0][0]).group(1))
    # a mean of R N = 1024 positive terms summed in another order (2 gamma_1024 ~ 1.2e-4), x10 for the
    # parameters' drift over 200 Adam steps, plus the 6 printed decimals
    assert abs(loss - res.history[-1]) <= 10 * 2 * 1024 * 2**-24 * res.history[-1] + 5e-7


def test_generated_pages_regenerate_exactly():
    # the experiments' pages are generated from the metrics.json files kept under docs/runs/<scale>/
    # (`python -m ksdp.experiments --docs docs` copies them there and writes the pages): nothing on a
    # generated page may be written by hand, or this fails
    from ksdp.experiments import report
    from ksdp.experiments.specs import EXPERIMENTS, PAPER

    docs = os.path.join(ROOT, "docs")
    scales = sorted(os.listdir(os.path.join(docs, "runs")))
    assert "quick" in scales
    quick = sorted(os.listdir(os.path.join(docs, "runs", "quick")))
    assert set(PAPER) <= set(quick) <= set(EXPERIMENTS)  # every paper experiment has its quick page
    for scale in scales:
        pages = report.docs_pages(docs, scale, list(EXPERIMENTS))
        assert len(pages) == (1 + len(quick) if scale == "quick" else 1)
        for path, text in pages.items():
            with open(os.path.join(docs, path)) as f:
                assert f.read() == text, f"docs/{path} is not what its runs' files generate: regenerate it with " + (
                    f"python -m ksdp.experiments --scale {scale} --report-only --docs docs"
                )
            # every figure a generated page shows is committed beside it
            for figure in re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text):
                assert os.path.exists(os.path.join(docs, os.path.dirname(path), figure)), (path, figure)
