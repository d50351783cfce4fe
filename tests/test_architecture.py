"""The layering the folder names promise: sources, families, metrics and results import nothing of ours but errors
(and the data-file locator); render reads results only; analyses are the one layer that combines them."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "solarforensics"
ALLOWED = {
    "sources": {"errors", "sources", "__version__"},
    "families": {"errors", "datafiles", "families"},
    "metrics": {"errors", "metrics"},
    "results": {"errors", "results", "__version__"},
    "render": {"errors", "render", "results"},
}


def our_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("solarforensics"):
            parts = node.module.split(".")
            found.update([parts[1]] if len(parts) > 1 else [alias.name for alias in node.names])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("solarforensics."):
                    found.add(alias.name.split(".")[1])
    return found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_lower_layers_import_only_what_they_may(layer):
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        extra = our_imports(path) - ALLOWED[layer]
        assert not extra, f"{path.relative_to(PACKAGE)} imports {sorted(extra)}"


def test_no_eval_exec_or_remote_code_anywhere():
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert not calls & {"eval", "exec"}, path
        assert "trust_remote_code=True" not in path.read_text(), path
