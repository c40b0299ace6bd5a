"""The package's imports run one way (issue: one-way layers).

Every ``import`` of a ksdp module, at module level or inside a function or class, is read from the
source with :mod:`ast` (nothing is executed), so an import placed inside a function to dodge a
cycle is caught as well. Two checks: the graph has no cycle, and every module imports only from
layers strictly below its own in :data:`LAYERS` (a new module must be placed there to pass).
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "ksdp")

# bottom to top; a module may import only from lower layers (the package root re-exports the doors)
LAYERS = [
    {"ksdp._version", "ksdp._checks", "ksdp.storage", "ksdp.parallel", "ksdp.estimate"},  # shared helpers
    {"ksdp.provenance"},  # the manifest of every output (reads the version)
    {"ksdp.kernels", "ksdp.flows", "ksdp.initial", "ksdp.assignment", "ksdp.plot", "ksdp.classifier"},
    {"ksdp.particle_mesh"},
    {"ksdp.drifts"},
    {"ksdp.chemical"},  # the chemical as a field (eps > 0), beside the elliptic drift
    {"ksdp.euler"},  # the Euler--Maruyama scan
    {"ksdp.health"},  # what a checked run refuses or warns of, read from the scan's records
    {"ksdp.ipm"},
    {"ksdp.data", "ksdp.transport", "ksdp.reference"},
    {"ksdp.wasserstein"},
    {"ksdp.model", "ksdp.metrics"},
    {"ksdp.generator"},
    {"ksdp.training.losses"},
    {"ksdp.training.config"},
    {"ksdp.training.checkpoint", "ksdp.training.step"},
    {"ksdp.training.loop"},
    {"ksdp.training"},
    {"ksdp"},
    {"ksdp.experiments", "ksdp.experiments.specs"},
    {"ksdp.experiments.checks"},  # the acceptance of a run's rows; its metrics.json loaded and judged
    {"ksdp.experiments.report", "ksdp.experiments.ipm_data"},
    {"ksdp.experiments.evaluate"},
    {"ksdp.experiments.run"},
    {"ksdp.experiments.__main__"},
]
RANK = {m: i for i, layer in enumerate(LAYERS) for m in layer}


def module_files():
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].replace(os.sep, ".")
                out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(folder, f)
    return out


MODULES = module_files()


def _resolve(name: str) -> str:
    """The ksdp module a dotted name refers to: itself if it is a module, else its longest module prefix."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports_of(module: str, source=None) -> set:
    """Every ksdp module ``module`` imports, from any scope (``ast.walk`` visits function bodies too)."""
    path = MODULES[module]
    tree = ast.parse(open(path).read() if source is None else source, path)
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            # "from ksdp import ipm" imports the submodule ksdp.ipm; "from ksdp import w2" the package
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        found.update(_resolve(n) for n in names if n == "ksdp" or n.startswith("ksdp."))
    found.discard(module)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def test_the_walker_sees_every_form_of_import():
    # the checks below can fail: imports inside functions and methods, relative ones, and names
    # imported from the package root are all edges
    src = (
        "import numpy\nfrom . import kernels\n"
        "def f():\n    from ksdp import training\n"
        "class C:\n    def g(self):\n        import ksdp.model as m\n        from ksdp.transport import w2\n"
        "        from ksdp import simulate\n"
    )
    assert imports_of("ksdp.ipm", src) == {"ksdp.kernels", "ksdp.training", "ksdp.model", "ksdp.transport", "ksdp"}


def test_no_import_cycle():
    state = {}  # module -> 1 while on the DFS stack, 2 when done

    def visit(m, path):
        state[m] = 1
        for n in sorted(GRAPH[m]):
            if state.get(n) == 1:
                cycle = path[path.index(n) :] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])


def test_every_module_is_placed_in_a_layer():
    assert sorted(set(MODULES) - set(RANK)) == [], "place new modules in LAYERS"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_from_below(module):
    above = sorted(n for n in GRAPH[module] if RANK[n] >= RANK[module])
    assert above == [], f"{module} imports {above}, which are not below it in LAYERS"


# --------------------------------------------------------------------------------------------
# Private names stay in their module
# --------------------------------------------------------------------------------------------
PRIVATE_MODULES = {"ksdp._version", "ksdp._checks", "benchmarks._common"}


def _python_files():
    for top in ("ksdp", "tests", "benchmarks"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for f in sorted(files):
                if f.endswith(".py"):
                    yield os.path.join(folder, f)


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_uses(path: str, source=None) -> list:
    """``(module, name)`` of every private name of another project module that ``path`` uses.

    A private name is one with a leading underscore, reached as ``module._name`` (through any alias
    of the module) or by ``from module import _name``. A private module (``ksdp._checks``) may be imported
    only from inside its own package (``ksdp`` for ``ksdp._checks``).
    """
    own = _module_name(path)
    tree = ast.parse(open(path).read() if source is None else source, path)
    aliases = {}  # local name -> project module it is bound to
    found = []

    def project(name: str) -> bool:
        return name.split(".")[0] in ("ksdp", "benchmarks")

    def check_module(module: str):
        parts = module.split(".")
        for i, part in enumerate(parts[1:], start=1):
            if _private(part) and own.split(".")[0] != parts[0]:
                found.append((".".join(parts[:i]), part))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if project(a.name):
                    check_module(a.name)
                    aliases[a.asname or a.name.split(".")[0]] = a.asname and a.name or a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and project(node.module) and not node.level:
            check_module(node.module)
            for a in node.names:
                if _private(a.name):
                    full = f"{node.module}.{a.name}"
                    if full in PRIVATE_MODULES:
                        check_module(full)
                    elif node.module != own:
                        found.append((node.module, a.name))
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"

    def dotted(node):
        if isinstance(node, ast.Name):
            return aliases.get(node.id)
        if isinstance(node, ast.Attribute):
            base = dotted(node.value)
            return None if base is None else f"{base}.{node.attr}"
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            base = dotted(node.value)
            if base is not None and base != own and f"{base}.{node.attr}" not in PRIVATE_MODULES:
                found.append((base, node.attr))
    return sorted(set(found))


def test_the_private_name_walker_sees_every_form():
    src = (
        "from ksdp import ipm as I\nimport ksdp\nfrom ksdp.training import _minibatch_jit\n"
        "from ksdp import _checks\nI._run_jit\nksdp.ipm._run\nI.simulate\n"
    )
    path = os.path.join(ROOT, "tests", "test_layers.py")
    assert private_uses(path, src) == [
        ("ksdp", "_checks"),
        ("ksdp.ipm", "_run"),
        ("ksdp.ipm", "_run_jit"),
        ("ksdp.training", "_minibatch_jit"),
    ]
    inside = os.path.join(ROOT, "ksdp", "data.py")  # a private module is free inside its package
    assert private_uses(inside, "from ksdp import _checks\n_checks.is_concrete\n") == []


@pytest.mark.parametrize("path", sorted(_python_files()), ids=lambda p: os.path.relpath(p, ROOT))
def test_no_private_name_used_outside_its_module(path):
    assert private_uses(path) == [], "make the name public (and document it), or use a public door"


# one concept per file: a module of ksdp/ over this many lines holds several; a function whose code (its
# docstring aside) runs over this many does several things
MODULE_LINES, FUNCTION_LINES = 600, 100


def function_lines(tree) -> list:
    """``(lines of code, name)`` of every function in ``tree``, its docstring not counted."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            doc = node.body[0]
            if isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str):
                n -= doc.end_lineno - doc.lineno + 1
            out.append((n, node.name))
    return out


def test_function_lines_leave_the_docstring_out():
    tree = ast.parse('def f(x):\n    """One.\n\n    Two.\n    """\n    y = x\n    return y\n\n\ndef g():\n    pass\n')
    assert function_lines(tree) == [(3, "f"), (2, "g")]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_and_functions_stay_small(module):
    with open(MODULES[module], encoding="utf-8") as f:
        text = f.read()
    assert text.count("\n") <= MODULE_LINES, f"{module} has {text.count(chr(10))} lines: split it by concept"
    long = [(n, name) for n, name in function_lines(ast.parse(text)) if n > FUNCTION_LINES]
    assert long == [], f"{module}: functions over {FUNCTION_LINES} lines of code: {long}"
