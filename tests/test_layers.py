"""Data flows one way, floor by floor: core -> models -> data -> training -> pruning -> export -> device_bench ->
studies -> cli. Each floor is a folder (a sub-package of `pacb_edge`).

Every import in the package (module level, inside a function or under TYPE_CHECKING) goes to a module of the same
floor or a lower one, no module imports another's private (`_name`) names, and no two modules import each other,
directly or around a circle.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Folder on disk -> import name, for the folders that pyproject.toml maps into `pacb_edge`.
FOLDERS = {"pacb_edge": "pacb_edge", "models": "pacb_edge.models", "export": "pacb_edge.export"}
FOLDERS["device_bench"] = "pacb_edge.device_bench"
# The floors, lowest first: a module's floor is the sub-package it sits in.
FLOORS = ("core", "models", "data", "training", "pruning", "export", "device_bench", "studies", "cli")


def floor(module: str) -> int | None:
    """The floor of a `pacb_edge` module (None for anything outside the package, and for the package itself)."""
    parts = module.split(".")
    if parts[0] != "pacb_edge" or len(parts) == 1:
        return None
    assert parts[1] in FLOORS, f"{module} is on no floor: every module sits in one of {FLOORS}"
    return FLOORS.index(parts[1])


def modules():
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield path, ".".join((package, *parts))


def imports(path: Path):
    """(imported module, imported names) of every import in the file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [a.name for a in node.names]
            if node.module == "pacb_edge":
                yield from ((f"pacb_edge.{n}", []) for n in names)
            else:
                yield node.module, names
        elif isinstance(node, ast.Import):
            yield from ((a.name, []) for a in node.names)


def test_every_module_sits_on_a_floor():
    found = {name for _, name in modules()}
    assert {"pacb_edge.core.errors", "pacb_edge.models.repvgg", "pacb_edge.export.api", "pacb_edge.cli.main"} <= found
    loose = [n for n in found if n.count(".") == 1 and n.split(".")[1] not in FLOORS]
    assert not loose, f"modules outside the floor folders: {loose}"
    assert floor("pacb_edge.cli.main") == len(FLOORS) - 1 and floor("pacb_edge.core.errors") == 0
    assert floor("numpy") is None


@pytest.mark.parametrize("path,name", list(modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_imports_go_one_way_and_never_to_private_names(path, name):
    own = floor(name)
    for module, names in imports(path):
        target = floor(module)
        assert target is None or own is None or target <= own, (
            f"{name} ({FLOORS[own]}) imports {module} ({FLOORS[target]})"
        )
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not (module.startswith("pacb_edge") and private), f"{name} imports private {private} from {module}"


def test_no_import_circles():
    """The module graph (every import, wherever it is written) has no cycle."""
    known = {name for _, name in modules()}
    graph: dict[str, set[str]] = {}
    for path, name in modules():
        edges = graph.setdefault(name, set())
        for module, names in imports(path):
            for target in (module, *(f"{module}.{n}" for n in names)):
                if target in known and target != name:
                    edges.add(target)
    # A package's __init__ importing its own modules is not a circle with them.
    graph = {n: {t for t in ts if not n or not t.startswith(f"{n}.")} for n, ts in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circle = stack[stack.index(nxt) :] + [nxt]
                pytest.fail("import circle: " + " -> ".join(circle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
