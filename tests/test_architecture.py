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

#: Circles still in the tree when this check was added; each is a debt, listed so that a
#: NEW circle fails the test. Remove an entry when its circle is gone (the test says so).
KNOWN_CIRCLES: list[frozenset[str]] = [
    # llm picks the scripted provider from testing; testing calls llm
    frozenset({"opensage.llm", "opensage.testing"}),
    # graph memory's query / episodes / embeddings / graph modules import each other
    frozenset({f"opensage.plugins.graph_memory.{m}" for m in
               ("embeddings", "episodes", "filters", "graph", "history", "query", "schema")}),
]


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


def test_no_new_import_circle_in_opensage():
    circles = _circles(grimp.build_graph("opensage"))
    new = [sorted(c) for c in circles if c not in KNOWN_CIRCLES]
    assert not new, f"import circle(s) in opensage/: {new}; fix the dependency direction"
    gone = [sorted(c) for c in KNOWN_CIRCLES if c not in circles]
    assert not gone, f"circle(s) removed, delete them from KNOWN_CIRCLES: {gone}"


def test_the_import_contracts_hold():
    """``lint-imports`` with the pyproject contracts: plugins independent, core off plugin
    internals. A broken contract is named in the failure message."""
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint) if lint.exists() else "lint-imports", "--no-cache"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    broken = [line for line in proc.stdout.splitlines() if " BROKEN" in line]
    assert proc.returncode == 0, f"broken import contract(s): {broken}\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}"
    assert "2 kept, 0 broken" in proc.stdout
