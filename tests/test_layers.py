"""The tree shows the layers: no import circles, and imports only point down.

Every `import genie...` / `from genie... import` / `training...` statement in the package is
read with `ast` (including imports inside functions: a lazy import is still an arrow), so a new
circle or an upward arrow fails here before it confuses a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("genie", "training")

# layer of each folder; a module may import its own layer or a lower one, never a higher one
LAYERS = {
    "genie.utils": 0,
    "genie.data": 1,
    "genie.models": 1,
    "genie.world": 2,
    "genie.eval": 3,
    "genie.generate": 3,
    "genie.serve": 4,
    "training": 4,
    "genie.bench": 5,
    "genie.cli": 5,
    "genie.__main__": 5,
    "genie": 5,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            out[_module_name(path)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module a dotted import name refers to (a name imported from a module -> that module)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" for a in node.names]
            for n in names:
                target = _resolve(n, modules)
                if target is not None and target != mod and not mod.startswith(target + "."):
                    graph[mod].add(target)  # a package's __init__ imported by its own modules
    return graph


def _layer(mod: str) -> int:
    best = max((k for k in LAYERS if mod == k or mod.startswith(k + ".")), key=len)
    return LAYERS[best]


def test_the_import_graph_has_no_circles():
    graph = import_graph()
    # Tarjan-free: depth-first search that reports the first back edge as the cycle it closes
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n) :] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_imports_point_down_the_layers():
    up = [
        f"{m} -> {n}"
        for m, targets in import_graph().items()
        for n in targets
        if _layer(n) > _layer(m)
    ]
    assert not up, "imports that point up a layer: " + ", ".join(sorted(up))


def test_the_check_sees_a_circle(tmp_path, monkeypatch):
    """The walker itself: two modules importing each other (one lazily) are caught."""
    pkg = tmp_path / "genie"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from genie.b import x\n")
    (pkg / "b.py").write_text("def f():\n    from genie import a\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    monkeypatch.setattr(__import__(__name__), "PACKAGES", ("genie",))
    graph = import_graph()
    assert graph["genie.a"] == {"genie.b"} and graph["genie.b"] == {"genie.a"}


def test_every_folder_says_what_it_is():
    for init in (ROOT / "genie").glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc.split()) >= 20, f"{init.parent.name}/__init__.py needs a docstring"
