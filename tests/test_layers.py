"""The packages import one another in one direction only (docs/design.md): a module may import
its own package and the packages below it, never one above, so there are no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "pointseg"
# Lower rank = lower layer.
RANK = {
    "meta": 0, "utils": 0, "tables": 0, "tables_scannet20": 0,
    "datasets": 0.5,  # dataset specs: read meta's tables; everything that loads or scores data reads them
    "data": 1, "sparse": 1,
    "losses": 2, "preprocessing": 2,
    "models": 3, "synthetic": 3, "evaluation": 3,
    "engine": 4,
    "analysis": 6,
    "cli": 7,
}


def _package(path: Path) -> str:
    rel = path.relative_to(ROOT).parts
    return rel[0].removesuffix(".py")


def _imported_packages(path: Path) -> set[str]:
    """pointseg packages a module imports, at module level or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: inside the module's own package
                continue
            names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "pointseg" and len(parts) > 1:
                out.add(parts[1])
    return out


def test_imports_only_go_down():
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        pkg = _package(path)
        if pkg == "__init__":
            continue
        assert pkg in RANK, f"{path}: package {pkg!r} has no layer in this test"
        for other in _imported_packages(path):
            if other != pkg and RANK[other] >= RANK[pkg]:
                wrong.append(f"{path.relative_to(ROOT.parent)} ({pkg}) imports pointseg.{other}")
    assert not wrong, "\n".join(wrong)
