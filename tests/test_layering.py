"""The import rule of the README's Layout section, and the size limits, checked on the source.

Every module of ``flexview`` is parsed with :mod:`ast`; imports at module level and inside
functions count alike, as do relative imports (``from . import x``) and
``importlib.import_module("flexview...")`` with a literal (or f-string prefix) name. The checks:

- no module imports one that imports it back (no cycle in the module graph);
- no cycle between top-level units (a subpackage, or a top-level module such as ``run.py``);
- no unit imports one of a higher layer (:data:`LAYERS`); nothing imports the root package;
- no module of ``flexview.model`` touches files;
- no function longer than :data:`MAX_FUNCTION_LINES`, counted from its ``def`` line to its last
  line (docstring and nested functions included, decorators not), and no module longer than
  :data:`MAX_MODULE_LINES` lines.

Each checker is also run on a small made-up package to show it reports what it should.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "flexview"
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400

# lower layers never import higher ones; units of one layer may import each other without a cycle
LAYERS = {
    "flexview.errors": 1, "flexview._version": 1, "flexview.device": 1, "flexview.params": 1,
    "flexview.model": 2,
    "flexview.io": 3,
    "flexview.preprocess": 4,
    "flexview.runfolder": 5,
    "flexview.train": 6,
    "flexview.run": 7,
    "flexview.recon": 8,
    "flexview.synth": 9,
    "flexview.app": 10,
    "flexview._napari": 11,
    "flexview.commands": 12, "flexview.cli": 12, "flexview.__main__": 12,
    "flexview": 13,
}
IMPORT_FUNCTIONS = {"import_module", "__import__"}
NUMPY_TORCH_FILE_CALLS = {"load", "save", "savez", "savez_compressed", "savetxt", "loadtxt", "genfromtxt",
                          "fromfile", "memmap"}
FILE_METHODS = {"open", "read_text", "write_text", "read_bytes", "write_bytes", "tofile", "touch", "unlink",
                "mkdir", "rmdir"}
FILE_MODULES = {"mrcfile", "starfile", "pickle", "shutil", "tempfile", "h5py", "imageio", "gemmi"}


# ----------------------------------------------------------------------------------------------
# the checkers
# ----------------------------------------------------------------------------------------------

def read_package(root: Path = PACKAGE) -> dict[str, tuple[str, bool]]:
    """Module name → (source, whether it is a package ``__init__``) for every ``.py`` under ``root``."""
    sources = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        sources[".".join(parts[:-1] if is_package else parts)] = (path.read_text(), is_package)
    return sources


def resolve(name: str, known: set[str]) -> str | None:
    """The longest prefix of the dotted ``name`` that is a known module (None outside the package)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return ".".join(parts[:end])
    return None


def _literal_name(node: ast.expr) -> str | None:
    """A module name given as a string literal, or the constant start of an f-string (``f"a.b.{x}"`` → a.b)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        return str(node.values[0].value).rsplit(".", 1)[0]
    return None


def _from_base(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module that ``from X import ...`` names, relative forms included."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    package = package[:len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def imports_of(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Known modules that ``module`` imports anywhere in its source."""
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(node, module, is_package)
            names += [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            literal = _literal_name(node.args[0]) if called in IMPORT_FUNCTIONS else None
            names += [literal] if literal else []
    found = {resolve(name, known) for name in names}
    return {name for name in found if name is not None and name != module}


def import_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    known = set(sources)
    return {name: imports_of(src, name, is_package, known) for name, (src, is_package) in sources.items()}


def unit(module: str) -> str:
    """The top-level unit of a module: ``flexview.io.star`` → ``flexview.io``; the root stays ``flexview``."""
    return ".".join(module.split(".")[:2])


def unit_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for a, targets in graph.items():
        out.setdefault(unit(a), set()).update(unit(b) for b in targets if unit(b) != unit(a))
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan 1972, SIAM J. Comput. 1:146)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def wrong_way(graph: dict[str, set[str]], layers: dict[str, int]) -> list[str]:
    """``a -> b`` for every import from a lower layer to a higher one."""
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                  if unit(a) != unit(b) and layers[unit(a)] < layers[unit(b)])


def file_access(source: str) -> list[str]:
    """``line: what`` for every place the source reads or writes files."""
    hits = []
    for node in ast.walk(ast.parse(source)):
        what = None
        if isinstance(node, ast.Import):
            what = next((a.name for a in node.names if a.name.split(".")[0] in FILE_MODULES), None)
        elif isinstance(node, ast.ImportFrom) and node.module:
            top = node.module.split(".")[0]
            if top in FILE_MODULES:
                what = node.module
            elif top in ("numpy", "torch"):
                what = next((f"{top}.{a.name}" for a in node.names if a.name in NUMPY_TORCH_FILE_CALLS), None)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
            what = "open()"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            attr, owner = node.func.attr, node.func.value
            owner_name = owner.id if isinstance(owner, ast.Name) else None
            if attr in FILE_METHODS or (owner_name in ("np", "numpy", "torch") and attr in NUMPY_TORCH_FILE_CALLS):
                what = f"{owner_name or '(...)'}.{attr}()"
        if what:
            hits.append(f"{node.lineno}: {what}")
    return hits


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``name (line N): L lines`` for every function or method longer than ``limit`` lines."""
    return [f"{node.name} (line {node.lineno}): {node.end_lineno - node.lineno + 1} lines"
            for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > limit]


# ----------------------------------------------------------------------------------------------
# the package
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sources():
    return read_package()


@pytest.fixture(scope="module")
def graph(sources):
    return import_graph(sources)


def test_every_unit_has_a_layer(sources):
    assert sorted({unit(m) for m in sources} - set(LAYERS)) == []


def test_no_module_cycle(graph):
    assert cycles(graph) == []


def test_no_cycle_between_units(graph):
    assert cycles(unit_graph(graph)) == []


def test_imports_point_down(graph):
    assert wrong_way(graph, LAYERS) == []


def test_nothing_imports_the_root_package(graph):
    assert sorted(a for a, targets in graph.items() if "flexview" in targets and a != "flexview") == []


def test_the_model_touches_no_files(sources):
    hits = {m: file_access(src) for m, (src, _) in sources.items() if unit(m) == "flexview.model"}
    assert {m: h for m, h in hits.items() if h} == {}


def test_functions_and_modules_are_short(sources):
    long = {m: f for m, (src, _) in sources.items() if (f := long_functions(src))}
    big = {m: len(src.splitlines()) for m, (src, _) in sources.items() if len(src.splitlines()) > MAX_MODULE_LINES}
    assert (long, big) == ({}, {})


@pytest.mark.parametrize("module", ["flexview.model", "flexview.io", "flexview.runfolder"])
def test_importing_a_layer_loads_nothing_above_it(module):
    """The same rule seen at run time: the modules an import really loads (a fresh interpreter)."""
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                       text=True).stdout)
    above = [m for m in loaded if m.startswith("flexview.") and LAYERS[unit(m)] > LAYERS[module]]
    assert above == []


# ----------------------------------------------------------------------------------------------
# the checkers on a made-up package: each reports what it must
# ----------------------------------------------------------------------------------------------

FAKE = {
    "flexview": ("def load():\n    from flexview.run import go\n", True),
    "flexview.errors": ("", False),
    "flexview.run": ("from flexview.model import thing\n", False),
    "flexview.model": ("from . import a\n", True),
    "flexview.model.a": ("def f():\n    from .b import g\n", False),            # lazy, relative
    "flexview.model.b": ("import importlib\nM = importlib.import_module('flexview.model.a')\n", False),
    "flexview.io": ("from .x import crop\n", True),
    "flexview.io.x": ("from flexview.preprocess import crop\n", False),
    "flexview.preprocess": ("from flexview.io import y\nfrom flexview import __version__\n", False),
    "flexview.io.y": ("import importlib\nfor n in 'ab':\n    importlib.import_module(f'flexview.model.{n}')\n",
                      False),
}


def test_fake_graph_resolves_every_import_form():
    graph = import_graph(FAKE)
    assert graph["flexview.model"] == {"flexview.model.a"}                   # from . import a
    assert graph["flexview.io"] == {"flexview.io.x"}                         # from .x import, in __init__
    assert graph["flexview.model.a"] == {"flexview.model.b"}                 # lazy from .b import g
    assert graph["flexview.model.b"] == {"flexview.model.a"}                 # import_module literal
    assert graph["flexview.io.y"] == {"flexview.model"}                      # f-string prefix
    assert graph["flexview.preprocess"] == {"flexview.io.y", "flexview"}     # submodule, root
    assert graph["flexview.run"] == {"flexview.model"}
    assert graph["flexview"] == {"flexview.run"}


def test_fake_cycles_are_found():
    graph = import_graph(FAKE)
    assert cycles(graph) == [["flexview.model.a", "flexview.model.b"]]
    assert cycles(unit_graph(graph)) == [["flexview.io", "flexview.preprocess"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_fake_wrong_way_imports_are_found():
    assert wrong_way(import_graph(FAKE), LAYERS) == ["flexview.io.x -> flexview.preprocess",
                                                     "flexview.preprocess -> flexview"]
    graph = {"flexview.model.a": {"flexview.io"}, "flexview.io": {"flexview.model"}}
    assert wrong_way(graph, LAYERS) == ["flexview.model.a -> flexview.io"]


BAD_MODEL = '''
import mrcfile
from numpy import load
def f(path, t):
    with open(path) as fh:
        pass
    np.save(path, t); np.savez(path, a=t); torch.load(path); torch.save(t, path)
    path.read_text(); path.write_bytes(b"")
'''
CLEAN_MODEL = '''
import numpy as np
import torch
def f(net, state, t):
    net.load_state_dict(state)
    return np.linalg.norm(t) + torch.linalg.norm(t) + np.asarray(t).sum()
'''


def test_file_access_is_found_and_pure_math_is_not():
    hits = [h.split(": ", 1)[1] for h in file_access(BAD_MODEL)]
    assert sorted(hits) == sorted(["mrcfile", "numpy.load", "open()", "np.save()", "np.savez()",
                                   "torch.load()", "torch.save()", "path.read_text()", "path.write_bytes()"])
    assert file_access(CLEAN_MODEL) == []


def test_long_functions_are_found():
    def function(lines: int) -> str:    # def line, then lines - 1 body lines
        return "def f():\n" + "    x = 1\n" * (lines - 1)

    assert long_functions(function(MAX_FUNCTION_LINES)) == []
    assert long_functions(function(MAX_FUNCTION_LINES + 1)) == [f"f (line 1): {MAX_FUNCTION_LINES + 1} lines"]
    nested = "class A:\n    def m(self):\n" + "        y = 2\n" * MAX_FUNCTION_LINES
    assert long_functions(nested) == [f"m (line 2): {MAX_FUNCTION_LINES + 1} lines"]
