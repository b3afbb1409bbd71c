"""Every public function and method in opensage/ has a docstring (the project's rule:
argument shapes, units, errors raised, the source of any threshold)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "opensage"


def _undocumented(path: Path, base: Path = PACKAGE.parent) -> list[str]:
    """``path:line name`` of each public function or method of a public class without a
    docstring (nested helper functions are implementation detail and not counted)."""
    missing: list[str] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if not child.name.startswith("_") and ast.get_docstring(child) is None:
                    missing.append(f"{path.relative_to(base).as_posix()}:{child.lineno} {prefix}{child.name}")
            elif isinstance(child, ast.ClassDef) and not child.name.startswith("_"):
                visit(child, f"{prefix}{child.name}.")

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), "")
    return missing


def test_every_public_function_in_the_package_has_a_docstring():
    missing = [m for path in sorted(PACKAGE.rglob("*.py")) for m in _undocumented(path)]
    assert not missing, "public functions without a docstring:\n" + "\n".join(missing)


def test_the_check_finds_a_missing_docstring(tmp_path):
    pkg = tmp_path / "opensage"
    pkg.mkdir()
    (pkg / "m.py").write_text('def public(x):\n    return x\n\n\ndef _private():\n    pass\n\n\n'
                              'class Shown:\n    def method(self):\n        """Documented."""\n\n'
                              '    def bare(self):\n        pass\n')
    assert _undocumented(pkg / "m.py", tmp_path) == ["opensage/m.py:1 public", "opensage/m.py:13 Shown.bare"]
