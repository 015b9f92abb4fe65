"""The layout's rules, checked on the source: one rollout engine, layers that import downward only, core never imports an
environment adapter, presentation without global side effects, docstrings on the public API."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DIGR = ROOT / "digr"
MODULES = sorted(DIGR.rglob("*.py"))

# The layers, lowest first; a module may import from its own layer and the layers below it.
LAYERS = [
    {"digr.errors", "digr.contracts", "digr.checkpoint", "digr.rollout", "digr"},
    {"digr.saliency", "digr.attacks", "digr.policies", "digr.method"},
    {"digr.evaluation"},
    {"digr.report", "digr.live"},
    {"digr.running"},
    {"digr.cli"},
]


def _layer(module: str) -> int:
    parts = module.split(".")
    for depth in (2, 1):
        name = ".".join(parts[:depth])
        for i, layer in enumerate(LAYERS):
            if name in layer:
                return i
    raise AssertionError(f"{module} is in no layer; add it to LAYERS")


def _name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _imports(tree: ast.AST):
    """(line, module) of every import, except those under ``if TYPE_CHECKING:`` (annotations only)."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            skip |= {id(n) for n in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_layers_import_downward_only_and_core_never_imports_an_adapter(path):
    me = _layer(_name(path))
    for line, module in _imports(ast.parse(path.read_text())):
        assert not (module == "envs" or module.startswith("envs.")), f"{path}:{line} imports the adapter {module}"
        if module.startswith("digr."):
            assert _layer(module) <= me, f"{path}:{line} imports {module}, a layer above {_name(path)}"


def test_only_the_rollout_engine_steps_an_environment():
    """``x.step(action)`` (a call with an argument) appears in digr/rollout.py only; an optimiser's ``step()`` takes none."""
    found = []
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "step" and (node.args or node.keywords):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found and all(f.startswith("digr/rollout.py:") for f in found), found


def test_modules_and_public_functions_and_classes_have_docstrings():
    missing = []
    for path in MODULES:
        tree = ast.parse(path.read_text())
        if not ast.get_docstring(tree):
            missing.append(str(path))
        for node in tree.body:
            if (
                isinstance(node, (ast.FunctionDef, ast.ClassDef))
                and not node.name.startswith("_")
                and not ast.get_docstring(node)
            ):
                missing.append(f"{path}:{node.lineno} {node.name}")
    assert not missing, missing


def test_the_pipeline_stays_a_thin_orchestrator():
    assert len((DIGR / "running" / "pipeline.py").read_text().splitlines()) <= 250


def test_importing_digr_changes_no_global_matplotlib_state():
    """No pyplot, no backend switch, no rcParams change at import (``rcParams.copy()`` reads the backend setting without
    resolving it, which would import pyplot)."""
    code = (
        "import sys, matplotlib\n"
        "before = matplotlib.rcParams.copy()\n"
        "import digr.cli, digr.running.pipeline, digr.report.figures, digr.report.run, digr.report.attack, digr.report.bench\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "assert matplotlib.rcParams.copy() == before\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
