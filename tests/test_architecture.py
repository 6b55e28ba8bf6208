"""The package's structure (docs/architecture.md): its layers are checked by import-linter in
``make lint``; here, what a layers contract does not see: import cycles, module size, private
names reached across modules, and the public import paths the README promises."""

from __future__ import annotations

import ast
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "vggfeat"
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = p.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _cycle(graph) -> list[str] | None:
    """One import cycle among the package's modules (TYPE_CHECKING imports included), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.find_modules_directly_imported_by(m)):
            if state.get(n) == 1:
                return stack[stack.index(n) :] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph.modules):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycle_type_checking_imports_included():
    graph = grimp.build_graph("vggfeat", exclude_type_checking_imports=False)
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_cycle_finder_finds_a_cycle():
    class G:
        modules = {"a", "b", "c"}

        def find_modules_directly_imported_by(self, m):
            return {"a": {"b"}, "b": {"c"}, "c": {"a"}}[m]

    assert _cycle(G()) == ["a", "b", "c", "a"]


def test_no_module_is_long():
    long = {n: len(p.read_text().splitlines()) for n, p in _modules().items()}
    assert {n: k for n, k in long.items() if k > MAX_LINES} == {}


def _private_imports(path: Path, module: str) -> list[str]:
    out = []
    pkg = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = pkg[: len(pkg) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if not target.startswith("vggfeat"):
                continue
            out += [
                f"{target}.{a.name}" for a in node.names if a.name.startswith("_") and a.name != "__version__"
            ]
    return out


def test_no_private_name_is_imported_across_modules():
    found = {n: _private_imports(p, n) for n, p in _modules().items()}
    tests = {p.name: _private_imports(p, "tests") for p in (REPO / "tests").glob("*.py")}
    found |= {k: [v for v in vs if v.startswith("vggfeat")] for k, vs in tests.items()}
    assert {k: v for k, v in found.items() if v} == {}


@pytest.mark.parametrize(
    "path, name",
    [
        ("vggfeat", "vgg"),
        ("vggfeat", "extract"),
        ("vggfeat", "Extractor"),
        ("vggfeat.evaluate", "posteriors"),
        ("vggfeat.svm", "voc_classification"),
        ("vggfeat.stats", "welch"),
        ("vggfeat.sklearn", "VGGFeatures"),
        ("vggfeat.hf", "add_features"),
        ("vggfeat.toy", "generate"),
    ],
)
def test_public_import_paths_of_the_readme(path, name):
    module = importlib.import_module(path)
    assert callable(getattr(module, name))


def test_public_second_names_are_the_same_modules():
    """``vggfeat.evaluate`` is the module that does the work, not a copy: patching one patches both."""
    pairs = {
        "vggfeat.evaluate": "vggfeat.evaluation.ilsvrc",
        "vggfeat.svm": "vggfeat.evaluation.svm",
        "vggfeat.stats": "vggfeat.evaluation.stats",
        "vggfeat.sklearn": "vggfeat.features.sklearn",
        "vggfeat.hf": "vggfeat.features.hf",
        "vggfeat.toy": "vggfeat.experiments.toy",
    }
    for public, home in pairs.items():
        assert importlib.import_module(public) is importlib.import_module(home)


def test_an_upward_import_fails_the_layers_contract(tmp_path):
    """The contract in pyproject.toml is live: a net importing the feature store breaks it."""
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    shutil.copytree(PACKAGE, tmp_path / "vggfeat", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    ok = subprocess.run([lint], cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout
    models = tmp_path / "vggfeat" / "nets" / "models.py"
    models.write_text(models.read_text() + "\nfrom ..features import store  # noqa\n")
    bad = subprocess.run([lint], cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode == 1
    assert "vggfeat.nets.models -> vggfeat.features.store" in bad.stdout
