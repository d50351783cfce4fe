"""The layering the folder names promise, read from the imports themselves.

Foundations (sources, families, metrics, results) import nothing of ours but errors and the data-file locator; render
reads results only; `models` opens a spec with sources and families; the analyses (comparison, evidence, provenance,
case, validation) combine the foundations; the local Hub, the replicas and the zoo are product features built on the
foundations; only the CLI sees everything. No module imports, even lazily, a module that imports it back.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "solarforensics"
FOUNDATION = {"errors", "datafiles", "__version__"}
ALLOWED = {
    "sources": {"sources"},
    "families": {"families"},
    "metrics": {"metrics"},
    "results": {"results"},
    "render": {"render", "results"},
    "models": {"models", "sources", "families"},
    "checkpoints": {"checkpoints", "families"},
    "localhub": {"localhub"},
    "replicas": {"replicas", "localhub", "families", "checkpoints"},
    "comparison": {"comparison", "models", "sources", "families", "metrics", "results"},
    "evidence": {"evidence", "models", "sources", "families", "results"},
    "provenance": {"provenance", "evidence", "models", "sources", "families", "metrics", "results"},
    "zoo": {"zoo", "checkpoints", "families"},
    "validation": {"validation", "provenance", "zoo", "models", "results", "population"},
    "population": {"population", "provenance", "evidence", "models", "sources", "metrics", "results"},
    # The case writes its own report and plots, the demo serves the replicas it runs on, and a scan step indexes the
    # case's models.
    "case": {"case", "comparison", "evidence", "provenance", "population", "models", "sources", "results", "render",
             "localhub", "replicas"},
    "bench": {"bench", "metrics", "sources", "families", "checkpoints", "localhub", "models", "evidence", "provenance", "zoo",
              "population", "replicas"},
}
TOP_LEVEL = {"cli", "errors", "datafiles", "__init__", "__main__", *ALLOWED}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Our modules a file imports anywhere in it (function-level imports too), as dotted names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("solarforensics"):
            for alias in node.names:  # `from package import module` imports the module
                candidate = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").exists() or \
                    (PACKAGE.parent / candidate.replace(".", "/") / "__init__.py").exists()
                found.add(candidate if is_module else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("solarforensics"))
    return found


def top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


GRAPH = {module_name(p): imported_modules(p) for p in sorted(PACKAGE.rglob("*.py"))}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_what_it_may(layer):
    for module, imports in GRAPH.items():
        if top(module) == layer:
            extra = {top(m) for m in imports} - ALLOWED[layer] - FOUNDATION - {"__init__"}
            assert not extra, f"{module} imports {sorted(extra)}"


def test_the_foundations_import_only_errors_and_the_data_locator():
    for module, imports in GRAPH.items():
        if top(module) in {"errors", "datafiles"}:
            assert not imports, f"{module} imports {sorted(imports)}"


def test_no_module_imports_one_that_imports_it_back():
    state: dict[str, int] = {}  # 1: on the current path, 2: finished

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH.get(module, ())):
            if target not in GRAPH or target == module:
                continue
            assert state.get(target) != 1, "import circle: " + " -> ".join([*path, module, target])
            if target not in state:
                visit(target, [*path, module])
        state[module] = 2

    for module in GRAPH:
        if module not in state:
            visit(module, [])


def test_the_folders_say_what_the_tool_does():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert packages | modules <= TOP_LEVEL | {"zoo"}, sorted((packages | modules) - TOP_LEVEL)
    for folder in PACKAGE.rglob("*"):
        if folder.is_dir():
            assert folder.name not in {"tests", "testing"}, f"product code in a folder named {folder.name}"


def test_no_eval_exec_or_remote_code_anywhere():
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert not calls & {"eval", "exec"}, path
        assert "trust_remote_code=True" not in path.read_text(), path
