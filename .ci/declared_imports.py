"""Every module the library imports is a declared runtime dependency.

    python .ci/declared_imports.py                      # the checkout: vggfeat/ and pyproject.toml
    python .ci/declared_imports.py dist/vggfeat-*.whl   # what ships: the wheel's files and METADATA
    python .ci/declared_imports.py WHEEL REPORT.json    # and pip's resolution of it holds them all

Each ``import`` of the package's modules (at module top or inside a function: both run for some
user) is read with ``ast``; a top-level name that is neither the standard library nor vggfeat
must belong to a distribution of the running environment (``importlib.metadata``'s
``packages_distributions``, so ``PIL`` is pillow) that the package requires without an extra.
Run it with an interpreter that has the dependencies installed (the development venv).

``REPORT.json``: what ``pip install --dry-run --ignore-installed --report`` resolved for the
wheel; each runtime requirement must be in it, at a version inside its declared range.
"""

from __future__ import annotations

import ast
import json
import re
import sys
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported(sources: dict[str, str]) -> dict[str, set[str]]:
    """Third-party top-level module -> the files that import it."""
    found: dict[str, set[str]] = {}
    for path, text in sources.items():
        for node in ast.walk(ast.parse(text, path)):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - {"vggfeat"}:
                found.setdefault(top, set()).add(path)
    return found


def runtime_requirements(lines: list[str]) -> set[str]:
    """Canonical names of the requirements that hold without an extra."""
    reqs = [Requirement(line) for line in lines]
    return {canonical(r.name) for r in reqs if not (r.marker and "extra" in str(r.marker))}


def problems(sources: dict[str, str], requires: list[str]) -> list[str]:
    declared, owners = runtime_requirements(requires), packages_distributions()
    out = []
    for module, files in sorted(imported(sources).items()):
        dists = {canonical(d) for d in owners.get(module, [])}
        where = ", ".join(sorted(files))
        if not dists:
            out.append(f"{module} (imported by {where}) comes from no installed distribution")
        elif not dists & declared:
            out.append(f"{module} (imported by {where}) is from {sorted(dists)}, not a declared dependency")
    return out


def unresolved(requires: list[str], report: dict) -> list[str]:
    """The runtime requirements pip's ``--report`` lacks or resolved outside their range."""
    got = {canonical(i["metadata"]["name"]): i["metadata"]["version"] for i in report["install"]}
    out = []
    for req in map(Requirement, requires):
        if req.marker and "extra" in str(req.marker):
            continue
        version = got.get(canonical(req.name))
        if version is None or not req.specifier.contains(version, prereleases=True):
            out.append(f"{req} resolved to {version or 'nothing'}")
    return out


def from_wheel(wheel: Path) -> tuple[dict[str, str], list[str]]:
    with zipfile.ZipFile(wheel) as z:
        sources = {n: z.read(n).decode() for n in z.namelist() if n.endswith(".py")}
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().split("\n\n")[0].splitlines()
    return sources, [line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")]


def from_checkout() -> tuple[dict[str, str], list[str]]:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    sources = {str(p.relative_to(REPO)): p.read_text() for p in (REPO / "vggfeat").rglob("*.py")}
    return sources, project["dependencies"]


if __name__ == "__main__":
    sources, requires = from_wheel(Path(sys.argv[1])) if len(sys.argv) > 1 else from_checkout()
    if len(sys.argv) > 2:
        report = json.loads(Path(sys.argv[2]).read_text())
        missing = unresolved(requires, report)
        for line in missing:
            print(f"not resolved: {line}", file=sys.stderr)
        if missing:
            sys.exit("pip's resolution of the wheel lacks a declared dependency")
        n = len(report["install"])
        print(f"pip resolved the {len(requires)} declared requirements into {n} distributions")
    found = problems(sources, requires)
    for line in found:
        print(f"undeclared import: {line}", file=sys.stderr)
    if found:
        sys.exit("declare them in pyproject.toml's [project] dependencies (or stop importing them)")
    print(f"every import of {len(sources)} files is a declared dependency ({len(requires)} declared)")
