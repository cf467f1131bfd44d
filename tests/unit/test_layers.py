"""The layering README's design notes state, read from the import statements themselves."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# the command-line layer inside the package: it runs flows (`run`, `check`, `serve`, the demo)
COMMAND_LINE = {"vulnattest/cli.py", "vulnattest/walkthrough.py"}


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (lazy imports inside functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def importers(package: str, *prefixes: str) -> dict[str, set[str]]:
    """The modules of `package` that import any module under `prefixes`, with what they import."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        wanted = {m for m in imports(path) if any(m == p or m.startswith(f"{p}.") for p in prefixes)}
        if wanted:
            out[str(path.relative_to(ROOT))] = wanted
    return out


def test_the_domain_library_never_imports_prefect_or_the_layers_above_it():
    offenders = importers("vulnattest", "prefect", "flows", "tasks", "deployments")
    assert set(offenders) <= COMMAND_LINE, offenders
    assert offenders, "the command-line layer runs flows: this test reads imports wrongly if it finds none"


def test_tasks_do_not_import_flows():
    assert importers("tasks", "flows", "deployments") == {}


def test_judging_attestations_does_not_need_the_scanner_adapter():
    adapter = importers("vulnattest", "vulnattest.scanners.trivy")
    assert set(adapter) <= {"vulnattest/services.py", "vulnattest/scanners/__init__.py"}, adapter
