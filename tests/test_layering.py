"""The package's layers, read from its source with ast: model families do not import the code that
drives them, post-processing does not import the span features, qabench's own modules import each
other at module level and without cycles (no import tucked into a function to dodge one)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "qabench"

# Function-level imports of qabench modules that stay, none of them dodging a cycle (the module-level
# graph has none, see test_no_module_level_cycles). Each keeps an import off a path that must stay light:
FUNCTION_LEVEL_ALLOWED = {
    # config.py imports qabench.compression for its registry while snakemake parses the workflow;
    # qabench.train would bring torch into every `snakemake -n`.
    ("qabench.compression", "qabench.train"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imported(node: ast.AST, module: str) -> list[str]:
    """The qabench modules an import statement names: ``from qabench.models import lstm`` names
    qabench.models.lstm, ``from qabench.models import MASKED_LOGIT`` qabench.models."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: from the importing module's package
            package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
            base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
        modules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES]
        names = modules + ([base] if len(modules) < len(node.names) else [])
    return [name for name in names if name == "qabench" or name.startswith("qabench.")]


def _imports(module: str) -> list[tuple[str, bool]]:
    """(imported qabench module, whether the import sits inside a function) for every import of ``module``."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    out = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                out.extend((name, in_function) for name in _imported(child, module))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return out


def _imports_any(module: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted({name for name, _ in _imports(module)
                   if any(name == f or name.startswith(f + ".") for f in forbidden)})


def test_the_package_is_found():
    assert {"qabench.predict", "qabench.postprocess", "qabench.features", "qabench.windows",
            "qabench.models.t5"} <= set(MODULES)


@pytest.mark.parametrize("module", [m for m in MODULES if m.startswith("qabench.models")])
def test_models_do_not_import_what_drives_them(module):
    assert _imports_any(module, ("qabench.predict", "qabench.features", "qabench.compression",
                                 "qabench.model_dir")) == []


def test_predict_does_not_import_the_variants_or_the_model_directory():
    """predict runs a loaded model; loading (qabench.model_dir) finds the method's loader by name."""
    assert _imports_any("qabench.predict", ("qabench.compression", "qabench.model_dir")) == []


def test_postprocess_does_not_import_features():
    assert _imports_any("qabench.postprocess", ("qabench.features",)) == []


def test_windows_is_low_level():
    """The window pieces every family shares import no model, feature or prediction code."""
    assert _imports_any("qabench.windows", ("qabench.models", "qabench.features", "qabench.predict",
                                            "qabench.postprocess", "qabench.compression")) == []


def test_no_function_level_imports_of_qabench():
    found = {(module, name) for module in MODULES for name, in_function in _imports(module) if in_function}
    assert found == FUNCTION_LEVEL_ALLOWED  # an entry no longer needed goes too


def test_no_module_level_cycles():
    """Importing a module also imports its parent packages, so those count as edges too."""
    graph = {module: set() for module in MODULES}
    for module in MODULES:
        for name, in_function in _imports(module):
            if not in_function and name in MODULES and name != module:
                graph[module].add(name)
        parts = module.split(".")
        graph[module].update(p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if p in MODULES)
    state: dict[str, str] = {}

    def walk(module: str, path: list[str]) -> None:
        state[module] = "open"
        for name in sorted(graph[module]):
            if state.get(name) == "open":
                cycle = path[path.index(name):] + [name] if name in path else [module, name]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if name not in state:
                walk(name, path + [name])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
