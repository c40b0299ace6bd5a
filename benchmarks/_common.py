"""Shared helpers of the benchmark scripts: device name, timing, JSON results."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
import time

import jax

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def device_name() -> str:
    dev = jax.devices()[0]
    if dev.platform == "cpu":  # the cores this process may run on (``taskset -c 0`` makes it 1core)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return f"cpu-{cores}core-{platform.machine()}"
    return getattr(dev, "device_kind", dev.platform).replace(" ", "-")


def environment() -> dict:
    import numpy

    return {
        "device": device_name(),
        "backend": jax.default_backend(),
        "n_devices": jax.device_count(),
        "jax": jax.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
    }


def timeit(fn, *, repeat: int = 3, min_time: float = 0.2) -> float:
    """Best wall time (s) of ``fn()`` over ``repeat`` rounds; ``fn`` must block until done.

    One warm-up call first (compilation); each round repeats ``fn`` until ``min_time`` has passed.
    """
    fn()
    best = float("inf")
    for _ in range(repeat):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= min_time:
                break
        best = min(best, elapsed / n)
    return best


def command() -> str:
    """This process's command line as a shell would take it again (``python -m benchmarks.<module> ...``)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the folder that holds benchmarks/
    module = os.path.splitext(os.path.relpath(os.path.abspath(sys.argv[0]), root))[0].replace(os.sep, ".")
    module = module.removesuffix(".__main__")  # python -m benchmarks.studies runs benchmarks/studies/__main__.py
    return "python -m " + module + "".join(" " + shlex.quote(a) for a in sys.argv[1:])


def save(name: str, payload: dict, out_dir: str | None = None) -> str:
    """Writes ``results/<name>-<device>-<date>.json`` atomically and returns its path."""
    from ksdp.provenance import manifest
    from ksdp.storage import write_json

    env = environment()
    path = os.path.join(out_dir or RESULTS, f"{name}-{env['device']}-{env['date']}.json")
    write_json(path, {"benchmark": name, "environment": env, "command": command(), "manifest": manifest(), **payload})
    print(f"wrote {path}")
    return path
