"""Where and how a result was made: the manifest that every file ksdp writes carries.

A manifest records the ksdp version, the git commit when ksdp runs from a checkout (and whether the
checkout had uncommitted changes), the versions of the packages a number depends on, the JAX
backend and device, the command line and the UTC time. It is plain JSON, so it travels inside
``.npz`` metadata, ``metrics.json`` and benchmark JSON alike; generated reports print it. Provenance
lives here rather than in prose.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from importlib import metadata

import jax

from ksdp._version import __version__

PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "scipy", "ott-jax")


def _package_versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> dict | None:
    """``{"commit": sha, "dirty": bool}`` of the checkout ksdp is imported from, or ``None`` when ksdp is
    installed from a wheel, git is missing, or the folder above the package is not its repository."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.exists(os.path.join(root, ".git")):
        return None
    try:
        sha = subprocess.run(
            ["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": sha, "dirty": bool(status.strip())}


def device() -> dict:
    """The JAX backend, the first device's kind and the number of devices; on CPU, also the cores this
    process may use and the machine's architecture."""
    dev = jax.devices()[0]
    out = {"backend": jax.default_backend(), "kind": str(getattr(dev, "device_kind", dev.platform))}
    out["count"] = jax.device_count()
    if dev.platform == "cpu":
        out["cores"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        out["machine"] = platform.machine()
    return out


def manifest(*, command: list[str] | None = None) -> dict:
    """The manifest of a result made now by this process (JSON-serialisable).

    Args:
      command: the command line to record; default ``sys.argv`` (the script and its arguments).
    """
    return {
        "ksdp": __version__,
        "git": git_commit(),
        "packages": _package_versions(),
        "python": platform.python_version(),
        "device": device(),
        "command": list(sys.argv if command is None else command),
        "utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def summary(m: dict) -> str:
    """One line for reports: the code that made a result (ksdp version, commit, jax version). Where and
    when it ran stay in the manifest itself (the report's settings table names the device)."""
    if not isinstance(m, dict):
        return "not recorded"
    git = m.get("git") or {}
    commit = git.get("commit", "")[:10] + (" (uncommitted changes)" if git.get("dirty") else "") if git else "none"
    jax_version = (m.get("packages") or {}).get("jax", "?")
    return f"ksdp {m.get('ksdp', '?')}, commit {commit}, jax {jax_version} (the whole manifest: metrics.json)"
