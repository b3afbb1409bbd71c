"""The import structure the architecture promises (docs/architecture.md, "Layout"):
no import circle in ``opensage/``, no plugin importing another plugin, the engine core
not importing plugin internals. The contracts live in pyproject.toml ([tool.importlinter]).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]



def _circles(graph) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan), lazy imports included:
    an import inside a function still ties the two modules together."""
    modules = graph.modules
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in modules:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(frozenset(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for m in sorted(modules):
        if m not in index:
            visit(m)
    return found


def test_no_import_circle_in_opensage():
    circles = _circles(grimp.build_graph("opensage"))
    assert not circles, f"import circle(s) in opensage/: {[sorted(c) for c in circles]}; fix the dependency direction"


def test_the_import_contracts_hold():
    """``lint-imports`` with the pyproject contracts: plugins independent, core off plugin
    internals. A broken contract is named in the failure message."""
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint) if lint.exists() else "lint-imports", "--no-cache"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    broken = [line for line in proc.stdout.splitlines() if " BROKEN" in line]
    assert proc.returncode == 0, f"broken import contract(s): {broken}\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}"
    assert "2 kept, 0 broken" in proc.stdout
