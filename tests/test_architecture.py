"""The package's dependencies point one way: each layer imports only the layers below it
(lazy imports inside functions count: a cycle through a command-line harness is still a
cycle), and no module imports a cycle back into itself."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "classndiff"
# Bottom to top. A module may import its own layer's other modules and anything below.
LAYERS = [
    # core: no model, no training
    {"config", "labels", "plots", "metrics", "data", "version", "images"},
    {"models"},
    {"hub", "trust", "explain"},  # persistence, and pure functions over the models
    {"training"},
    {"pipelines"},
    {"evaluation"},
    {"cli", "__main__", "__init__"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(module: str) -> str:
    """The layer unit a module belongs to: its subpackage, or its own name at the top."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path) -> set[str]:
    """The classndiff modules a file imports, anywhere in it (top level or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{path}: relative import; the package uses absolute ones")
            if node.module and node.module.split(".")[0] == "classndiff":
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "classndiff")
    return found


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in package.rglob("*.py")}


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


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in edges.items():
        for target in targets:
            low, high = unit(module), unit(target)
            if RANK[high] > RANK[low]:
                bad.append(f"{module} → {target}")
    return sorted(bad)


def test_every_module_has_a_layer() -> None:
    missing = {unit(m) for m in graph()} - set(RANK)
    assert not missing, f"add {sorted(missing)} to LAYERS"


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_every_import_points_down_the_layers() -> None:
    assert not upward_imports(graph())


def test_the_checks_catch_a_cycle_and_an_upward_import() -> None:
    """The tests above can fail: a made-up graph with a cycle and an upward edge."""
    edges = {"classndiff.models.dit": {"classndiff.pipelines.pipeline"},
             "classndiff.pipelines.pipeline": {"classndiff.models.dit"}}
    assert find_cycle(edges) is not None
    assert upward_imports(edges) == ["classndiff.models.dit → classndiff.pipelines.pipeline"]
