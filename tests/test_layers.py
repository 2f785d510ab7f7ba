"""Data flows one way: models -> pacb_edge (data, train, prune) -> export -> device_bench -> the commands.

Every import in the package (module level or inside a function) goes to a module of the same layer or a lower one,
and no module imports another's private (`_name`) names.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"pacb_edge": "pacb_edge", "models": "pacb_edge.models", "export": "pacb_edge.export"}
FOLDERS["device_bench"] = "pacb_edge.device_bench"
# Layer of each module under pacb_edge (by its first name); anything not listed is a command (the top layer).
BASE = ("errors", "fileio", "consoles", "parallel", "run_config", "remote", "plots", "paper_numbers", "runtimes")
LAYERS = {**dict.fromkeys(BASE, 0), "models": 1, "data": 2, "data_sources": 2, "checkpoint": 2}
LAYERS.update({"train": 3, "prune": 3, "zoo": 3, "latency": 3, "export": 4, "device_bench": 5})
TOP = 6


def layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "pacb_edge" or len(parts) == 1:
        return None
    return LAYERS.get(parts[1], TOP)


def modules():
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).glob("*.py")):
            yield path, package if path.stem == "__init__" else f"{package}.{path.stem}"


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


def test_the_layers_cover_the_package():
    found = {name for _, name in modules()}
    assert {"pacb_edge.errors", "pacb_edge.models.repvgg", "pacb_edge.export.api", "pacb_edge.cli"} <= found
    assert layer("pacb_edge.cli") == TOP and layer("pacb_edge.export.api") == 4 and layer("numpy") is None


@pytest.mark.parametrize("path,name", list(modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_imports_go_one_way_and_never_to_private_names(path, name):
    own = layer(name)
    for module, names in imports(path):
        target = layer(module)
        assert target is None or target <= own, f"{name} (layer {own}) imports {module} (layer {target})"
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not (module.startswith("pacb_edge") and private), f"{name} imports private {private} from {module}"
