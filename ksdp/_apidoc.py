"""Writes ``docs/api.md`` from the docstrings: ``python -m ksdp._apidoc > docs/api.md``.

``tests/test_docs.py`` fails when the committed page differs from what this prints, so the
reference cannot drift from the code.
"""
from __future__ import annotations

import importlib
import inspect
import re
import sys

MODULES = ("ksdp", "ksdp.ipm", "ksdp.kernels", "ksdp.flows", "ksdp.data", "ksdp.transport", "ksdp.model",
           "ksdp.training", "ksdp.parallel", "ksdp.experiments.specs", "ksdp.experiments.run")


def _public(module):
    """Names defined in ``module`` itself (or, for the package, its re-exports), in source order."""
    if module.__name__ == "ksdp":
        return [n for n in vars(module) if not n.startswith("_") and not inspect.ismodule(getattr(module, n))]
    names = []
    for n, obj in vars(module).items():
        if n.startswith("_"):
            continue
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and getattr(obj, "__module__", None) == module.__name__:
            names.append(n)
        elif getattr(getattr(obj, "__wrapped__", None), "__module__", None) == module.__name__:
            names.append(n)  # a jax.jit-wrapped function
    return names


def _signature(obj) -> str:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return ""
    # drop parameters whose default is an anonymous object (flax's parent=<_Sentinel at 0x...>)
    sig = sig.replace(parameters=[p for p in sig.parameters.values() if " at 0x" not in repr(p.default)])
    text = re.sub(r"ForwardRef\('([^']*)'\)", r"\1", str(sig))
    return re.sub(r"(: |-> )'([^']*)'", r"\1\2", text)  # string annotations without quotes


def _doc(obj) -> str:
    return inspect.cleandoc(inspect.getdoc(obj) or "(no docstring)")


def render() -> str:
    out = ["# API reference", "",
           "Generated from the docstrings by `python -m ksdp._apidoc > docs/api.md`; `tests/test_docs.py` "
           "checks that this page is current.", ""]
    for modname in MODULES:
        module = importlib.import_module(modname)
        out += [f"## `{modname}`", "", _doc(module), ""]
        for name in _public(module):
            obj = getattr(module, name)
            if modname == "ksdp":
                out.append(f"- `ksdp.{name}`: `{getattr(obj, '__module__', modname)}.{name}`")
                continue
            kind = "class" if inspect.isclass(obj) else "def"
            out += [f"### `{kind} {name}{_signature(obj)}`", "", _doc(obj), ""]
        if modname == "ksdp":
            out.append("")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
