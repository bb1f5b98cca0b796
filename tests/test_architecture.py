"""The package's dependencies point one way: no import cycles (lazy imports inside functions
count: a cycle through a command-line harness is still a cycle), and the library below the
pipeline never reaches up to the pipeline, the harnesses, the report or the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "classndiff"
# The top: what users run. Nothing in the library may import these.
UPPER = {"pipeline", "cli", "checks", "report", "card", "evaluate", "export", "__main__"}
# The library under the pipeline (models, training, trust, explanation, measures).
LIBRARY = {"config", "labels", "lr", "checkpoint", "backbones", "model", "diffusion", "data",
           "skintone", "trust", "saliency", "fairness", "metrics", "bootstrap", "inputs",
           "objective", "loop", "train", "evaluator", "shifts", "plots", "hub"}


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The classndiff modules a file imports, anywhere in it (top level or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:  # from .x import y
                found.add(node.module.split(".")[0])
            elif node.level == 1:  # from . import x
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("classndiff"):
                parts = node.module.split(".")
                found.update([parts[1]] if len(parts) > 1 else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "classndiff" and len(parts) > 1:
                    found.add(parts[1])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(
                node.func, "attr", None)) in ("__import__", "import_module"):
            for arg in node.args:
                if isinstance(arg, ast.Constant) and str(arg.value).startswith("classndiff."):
                    found.add(str(arg.value).split(".")[1])
    return (found & modules) - {path.stem}


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    modules = {p.stem for p in package.glob("*.py")}
    return {path.stem: imports_of(path, modules) for path in package.glob("*.py")}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_the_library_never_imports_the_layers_above_it() -> None:
    edges = graph()
    assert LIBRARY <= set(edges), sorted(LIBRARY - set(edges))  # the lists name real modules
    upward = {f"{low} → {high}" for low in LIBRARY for high in edges[low] & UPPER}
    assert not upward, sorted(upward)


def test_the_checker_sees_lazy_and_absolute_imports(tmp_path: Path) -> None:
    """The test above can fail: an import inside a function, or by absolute name, counts."""
    (tmp_path / "a.py").write_text("def f():\n    from .b import x\n")
    (tmp_path / "b.py").write_text("def g():\n    __import__('classndiff.c')\n")
    (tmp_path / "c.py").write_text("import classndiff.a\nimport numpy\n")
    edges = graph(tmp_path)
    assert edges == {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    assert find_cycle(edges) == ["a", "b", "c", "a"]
    (tmp_path / "c.py").write_text("import numpy\n")
    assert find_cycle(graph(tmp_path)) is None
