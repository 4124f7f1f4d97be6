"""The package's shape: no import cycles, and imports that point down the stages only.

Read with the standard library's ``ast``, counting imports inside functions and under
``TYPE_CHECKING`` too (a cycle hidden in a function body is still a cycle for a reader). The
layers, from the bottom, are written down in ``docs/architecture.md``:

    core -> data -> faces -> models -> features -> evaluate -> train -> serve
         -> top-level pipelines (compare, predict, bench, demo) -> cli -> the ``fertool`` package

A module may import modules of its own layer and of the layers below it, never above.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "fertool"

#: Layers from the bottom. Anything directly under ``fertool/`` that is not listed is a top-level
#: pipeline module (layer ``PIPELINES``).
LAYERS = ("core", "data", "faces", "models", "features", "evaluate", "train", "serve")
PIPELINES = len(LAYERS)
CLI = PIPELINES + 1
PACKAGE = CLI + 1


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The fertool module that ``import name`` loads (longest known prefix), or None."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def imports_of(mod: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every fertool module that ``mod`` imports, anywhere in its body.

    ``from fertool.x import y`` is an import of the module ``fertool.x.y`` when there is one,
    otherwise of ``fertool.x`` (a name defined there or re-exported by a package).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, base] if base else pkg)
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names
            ]
        for name in names:
            if name == "fertool" or name.startswith("fertool."):
                target = resolve(name, modules)
                if target is not None and target != mod:
                    found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def layer(mod: str) -> int:
    parts = mod.split(".")
    if len(parts) == 1:
        return PACKAGE
    top = parts[1]
    if top in LAYERS:
        return LAYERS.index(top)
    if top == "cli":
        return CLI
    if top == "__main__":
        return PACKAGE
    return PIPELINES


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_imports_inside_functions(tmp_path):
    """The reader itself: an import in a function body and a relative import both count."""
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from fertool.core import io\n", encoding="utf-8")
    modules = {"fertool.core.io": Path("x"), "fertool.core": Path("y"), "fertool.m": src}
    assert imports_of("fertool.m", src, modules) == {"fertool.core.io"}
    rel = tmp_path / "r.py"
    rel.write_text("from .io import read_image\n", encoding="utf-8")
    assert imports_of("fertool.core.r", rel, modules) == {"fertool.core.io"}


def test_cycle_finder_finds_a_two_module_cycle():
    graph = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert find_cycles(graph) == [["a", "b"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles among fertool modules:\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_imports_point_down_the_layers():
    graph = import_graph()
    upward = sorted(
        f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)})"
        for m, targets in graph.items()
        for t in targets
        if layer(t) > layer(m)
    )
    assert not upward, "imports that point up the stages:\n" + "\n".join(upward)


@pytest.mark.parametrize("package", [*LAYERS, "cli"])
def test_every_stage_package_says_what_it_owns(package):
    init = ROOT / package / "__init__.py"
    assert init.is_file(), f"fertool/{package}/ is missing or is not a package"
    doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
    assert doc and "Owns" in doc and "May import" in doc, (
        f"fertool/{package}/__init__.py needs a docstring with 'Owns' and 'May import'"
    )
