"""The Python code graph against a SCIP index of the same source, and code-question latency.

Projects and split (``split`` in the JSON line; dev = looked at and tuned on, held-out =
only reported):

* dev: ``networkx==3.5`` from PyPI (574 .py files, tests included; the default),
  ``click==8.1.8`` (16 files) and ``rich==13.9.4`` (78 files). Their misses were studied
  and the ingest tuned on them (networkx and click in sessions 1-3, rich in session 3
  round 2, after it had been held out in round 1), so their numbers are not an unbiased
  estimate.
* held-out, chosen before tuning in session 3: ``docutils==0.21.2`` (128 .py files),
  pinned, written by people outside this team; run once before and once after each round
  of changes, its missed or extra edges never looked at.
* dev since session 4: ``astroid==3.3.5`` (96 .py files) and ``prompt_toolkit==3.0.48``
  (144 .py files). They were held out in session 3 round 2 (chosen before tuning on rich,
  reported once: call+reference recall 0.914 and 0.896) and then moved to dev so their
  misses could be studied.
* dev since session 4 round 2: ``jinja2==3.1.4`` (25 .py files), ``httpx==0.27.2`` (24)
  and ``marshmallow==3.23.1`` (13). They were chosen before session 4's changes and held
  out in its round 1 (run on the code before and after it, misses not read: recall 0.921,
  0.943 and 0.914), then moved to dev so their misses could be studied.
* held-out, chosen in session 4 round 2 before any of its changes and before the jinja2 /
  httpx / marshmallow misses were read: ``starlette==0.41.3``, ``requests==2.32.3`` and
  ``isort==5.13.2``, pinned, written by people outside this team, never run through this
  bench before; reported once on the code before round 2 and once after, not tuned on
  (see :data:`HELD_OUT`).

Each is downloaded with ``pip download --no-deps`` into ``--cache`` and copied into a
temporary workspace.

1. **Ingest**: ``@memory-ingest`` of the package (first run), then an incremental
   re-ingest after appending a function to one file (nodes/edges touched).
2. **Queries**: for 200 symbols drawn with a fixed seed, every relation of
   ``@memory-query mode=code`` in-process (:class:`CodeGraph.ask`); p50/p95 per relation
   and over all point questions (``unused`` is a scan of all definitions and is reported
   on its own). Target (issue 14): p95 <= 1 ms on a 500-file project.
3. **SCIP oracle** (skipped with ``--no-scip`` or when node/npm are missing):
   ``@sourcegraph/scip-python`` (npm, pinned :data:`SCIP_PYTHON`) indexes the same
   files; the index is read with opensage's own SCIP reader (``scip_import.read_index``:
   the protobuf runtime and bindings generated from upstream scip.proto) and compared:

   * definitions: SCIP definition occurrences of global symbols (not locals, not
     parameters, not modules) vs our class/function/method/variable/attribute nodes,
     matched by qualified name or, failing that, by (file, short name): the two name
     some nested definitions differently (scip-python calls a function nested in a
     method ``Class.inner``);
   * call+reference edges: each SCIP reference occurrence to a symbol defined in the
     project becomes (the innermost of our definitions whose lines hold it, the target);
     ours are ``calls`` + ``references`` edges plus ``decorates`` edges read as (the
     decorated definition's parent, the decorator). An instance attribute's line
     (``self.x = ...``) counts for the method holding it (a class attribute of a class
     nested in a function stays its own user), and a SCIP target named differently from
     ours is mapped to our definition at the same (file, short name, line), else to a
     unique (file, short name) (scip-python names a function nested in a method
     ``Class.inner`` and an attribute of a class nested in a function ``module.Class.x``;
     it gives several nested functions of one class the same symbol, which then maps to
     the first). Occurrences on import statements
     are left out (imports are ``imports`` edges between modules here), and so are
     references of a definition to itself and occurrences whose written name is not the
     name of the symbol the indexer gave them (scip-python 0.6.6 labels many names reached
     through networkx's star-import re-exports, such as ``nx.Graph``, with unrelated
     symbols such as ``selfloop_edges``: indexer errors, counted in the output). Because
     such a dropped occurrence may still be a real edge on our side, the headline
     call+reference row keeps only the users (definitions) with no mislabelled
     occurrence, on both sides; the row over all users is printed too;
   * inherits edges: SCIP ``is_implementation`` relationships between project classes vs
     our ``inherits`` edges.

   Targets (issue 14): definitions recall >= 0.99, call+reference recall >= 0.95 at
   precision >= 0.95.

TypeScript: ``--project npm:rxjs@7.8.1`` takes the package's ``src`` folder (``npm
pack``) and indexes it with ``@sourcegraph/scip-typescript`` (``--infer-tsconfig``);
scip-typescript lists every ancestor of a class, so inherits edges are compared as
transitive closures.

Go and Rust: ``--project deb:golang-github-spf13-cobra-dev=1.6.1-1`` or
``--project deb:librust-semver-dev=1.0.14-1`` takes the sources from a Debian package
(``apt-get download`` + ``dpkg-deb -x``, pinned by version). There is no SCIP oracle for
them here (scip-go and rust-analyzer are not on PyPI, npm or Debian): the bench reports the
ingest, the edge counts by type, query times and 12 sampled edges (fixed seed) to check by
hand.

Prints a table and ends with one JSON line.

    python bench/codegraph.py [--cache ~/.cache/opensage-bench] [--no-scip] [--project networkx==3.5]
    python bench/codegraph.py --project click==8.1.8 --dump-misses /tmp/click-misses.json
    python bench/codegraph.py --project rich==13.9.4 --dump-misses /tmp/rich-misses.json
    python bench/codegraph.py --project docutils==0.21.2        # held-out: report only
    python bench/codegraph.py --project astroid==3.3.5 --dump-misses /tmp/astroid-misses.json
    python bench/codegraph.py --project jinja2==3.1.4 --dump-misses /tmp/jinja2-misses.json
    python bench/codegraph.py --project starlette==0.41.3       # held-out: report only
    python bench/codegraph.py --project requests==2.32.3        # held-out: report only
    python bench/codegraph.py --project isort==5.13.2           # held-out: report only
    python bench/codegraph.py --project npm:rxjs@7.8.1
    python bench/codegraph.py --project deb:golang-github-spf13-cobra-dev=1.6.1-1
    python bench/codegraph.py --project deb:librust-semver-dev=1.0.14-1
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from opensage.host import Host
from opensage.plugins.graph_memory.codegraph import CodeGraph
from opensage.plugins.graph_memory.graph import graph_for
from opensage.store import Workspace

SCIP_PYTHON = "@sourcegraph/scip-python@0.6.6"
SCIP_TYPESCRIPT = "@sourcegraph/scip-typescript@0.4.0"
DEF_TYPES = ("class", "function", "method", "variable", "attribute")
#: Projects the ingest was tuned on (their misses were read) vs held-out ones (only reported;
#: docutils chosen before tuning in session 3; starlette, requests and isort chosen in
#: session 4 round 2 before tuning on jinja2, httpx and marshmallow, which were held out in
#: session 4 round 1). Any other project is reported as "unsplit".
DEV = ("networkx==3.5", "click==8.1.8", "rich==13.9.4", "astroid==3.3.5", "prompt_toolkit==3.0.48",
       "jinja2==3.1.4", "httpx==0.27.2", "marshmallow==3.23.1")
HELD_OUT = ("docutils==0.21.2", "starlette==0.41.3", "requests==2.32.3", "isort==5.13.2")
POINT_RELATIONS = ("exists", "callers", "callees", "references", "members", "implementors", "file-symbols")



def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def fetch_npm(spec: str, cache: Path) -> Path:
    """The unpacked npm package ``name@version`` (``npm pack``), cached; returns its folder."""
    dest = cache / ("src-npm-" + spec.replace("/", "_").replace("@", "-"))
    if not (dest / "package").is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["npm", "pack", spec, "--pack-destination", str(dest)], capture_output=True, text=True,
                           check=True, timeout=600)
        tgz = dest / r.stdout.strip().splitlines()[-1]
        subprocess.run(["tar", "xzf", str(tgz), "-C", str(dest)], check=True, timeout=300)
    return dest / "package"


def fetch_project(spec: str, cache: Path) -> Path:
    """The extracted wheel of ``spec`` (pip download --no-deps), cached."""
    name, _, version = spec.partition("==")
    dest = cache / f"src-{name}-{version}"
    if (dest / name).is_dir():
        return dest
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", spec,
                    "-d", str(wheels)], check=True, capture_output=True, timeout=600)
    wheel = next(wheels.glob(f"{name}-{version}-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        z.extractall(dest)
    return dest


def npm_tools(cache: Path) -> Path | None:
    """node_modules with the pinned SCIP packages (npm install into the cache), or None."""
    if not shutil.which("node") or not shutil.which("npm"):
        return None
    root = cache / "npm"
    mods = root / "node_modules" / "@sourcegraph"
    if not (mods / "scip-python").is_dir() or not (mods / "scip-typescript").is_dir():
        root.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(root), SCIP_PYTHON,
                            SCIP_TYPESCRIPT], capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            print(f"npm install failed: {r.stderr[-500:]}", file=sys.stderr)
            return None
    return root / "node_modules"


def scip_index(src: Path, name: str, version: str, cache: Path, mods: Path) -> Path:
    out = cache / f"{name}-{version}.scip"
    if not out.exists():
        # an empty virtualenv first on PATH: pyright must resolve the project's imports to the
        # files being indexed, not to another installed version of the same package
        venv = cache / "indexer-venv"
        if not (venv / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
        env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
        t0 = time.perf_counter()
        subprocess.run(["node", str(mods / "@sourcegraph/scip-python/index.js"), "index", ".", "--project-name", name,
                        "--project-version", version, "--output", str(out)], cwd=src, check=True, env=env,
                       capture_output=True, timeout=3600)
        print(f"scip-python indexed {name} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return out


def scip_index_ts(src: Path, spec: str, cache: Path, mods: Path) -> Path:
    out = cache / ("npm-" + spec.replace("/", "_").replace("@", "-") + ".scip")
    if not out.exists():
        subprocess.run(["node", str(mods / "@sourcegraph/scip-typescript/dist/src/main.js"), "index", "--infer-tsconfig",
                        "--output", str(out)], cwd=src, check=True, capture_output=True, timeout=3600)
    return out


def decode_scip(index: Path) -> list[dict]:
    """The documents of a SCIP index, read by opensage's own reader (protobuf runtime + the
    generated scip_pb2, the same code ``@memory-ingest scip=`` uses)."""
    from opensage.plugins.graph_memory.scip_import import read_index

    return [{"path": doc.relative_path,
             "occurrences": [(list(o.range), o.symbol, o.symbol_roles) for o in doc.occurrences],
             "symbols": [(s.symbol, [(r.symbol, r.is_implementation) for r in s.relationships]) for s in doc.symbols]}
            for doc in read_index(index).documents]


def fetch_deb(spec: str, cache: Path) -> tuple[Path, str]:
    """A Debian source package ``name=version`` (``apt-get download`` + ``dpkg-deb -x``), cached;
    returns (the folder holding the project, its folder name): the folder with ``go.mod``
    under /usr/share/gocode/src or with ``Cargo.toml`` under /usr/share/cargo/registry."""
    dest = cache / ("src-deb-" + spec.replace("=", "-"))
    if not dest.is_dir():
        tmp = cache / "deb-download"
        tmp.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", spec], cwd=tmp, check=True, capture_output=True, timeout=600)
        deb = next(tmp.glob(spec.split("=")[0] + "_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True, timeout=300)
    marker = next(iter(sorted(dest.rglob("go.mod"), key=lambda p: len(p.parts)) or
                       sorted(dest.rglob("Cargo.toml"), key=lambda p: len(p.parts))))
    return marker.parent.parent, marker.parent.name


_DESC = re.compile(r"`((?:[^`]|``)+)`|([^/#.:()\[\]`]+)|(\([^)]*\))|([/#.:\[\]!])")


_TS_SUFFIX = re.compile(r"\.(ts|tsx|mts|cts|js|jsx|mjs|cjs)$")


def scip_qualname(symbol: str) -> tuple[str, str] | None:
    """(qualified name, kind) of a scip-python or scip-typescript global symbol; None for
    locals, parameters, type parameters and modules. scip-typescript's file segments lose
    their suffix (``internal/`Subject.ts`/Subject#`` -> ``internal.Subject.Subject``, an
    ``index`` file names its folder) and ``<constructor>`` is ``constructor``."""
    if symbol.startswith("local ") or not symbol:
        return None
    parts = symbol.split(" ", 4)
    if len(parts) < 5:
        return None
    desc = parts[4]
    if parts[0] == "scip-typescript":
        desc = re.sub(r"`([^`]+)`/", lambda m: _TS_SUFFIX.sub("", m.group(1)) + "/", desc)
        desc = desc.replace("/index/", "/").replace("`<constructor>`", "constructor")
        if desc.startswith("index/"):
            desc = desc[len("index/"):]
    names: list[str] = []
    kind = None
    pos = 0
    module = None
    while pos < len(desc):
        m = _DESC.match(desc, pos)
        if m is None:
            return None
        pos = m.end()
        if m.group(1) is not None or m.group(2) is not None:
            names.append((m.group(1) or m.group(2)).replace("``", "`"))
        elif m.group(3) is not None:
            if m.group(3) != "()":
                return None  # a parameter: method().(name)
            kind = "callable"
        else:
            sep = m.group(4)
            if sep == "/":
                module = ".".join(names)
                names = [module]
                kind = "module"
            elif sep == "#":
                kind = "type"
            elif sep == ".":
                kind = kind if kind == "callable" else "term"
            elif sep in "()[]":
                return None  # a parameter or type parameter
            elif sep == ":":
                kind = "meta"
    if kind in (None, "module", "meta") or not names:
        return None
    if len(names) > 2 and names[-1] == names[-2]:
        names.pop()  # scip-python names some annotated module variables x.x
    qual = ".".join(n.removesuffix("/") for n in names)
    qual = qual.replace("/", ".")
    if qual.endswith(".__init__") and kind == "module":
        return None
    return qual.replace(".__init__.", ".", 1) if ".__init__." in qual and module and module.endswith("__init__") else qual, kind


def our_graph(conn) -> tuple[dict, dict, set, set, set]:
    """Our definitions {qualname: (type, path, line, end_line)}, parents, and edge pair sets."""
    defs, by_id, modules = {}, {}, set()
    for r in conn.execute(f"SELECT id, type, label, metadata FROM nodes WHERE type IN "
                          f"({','.join('?' * len(DEF_TYPES))}, 'module')", DEF_TYPES):
        meta = json.loads(r["metadata"])
        if meta.get("source") != "ingest" or meta.get("external"):
            continue
        q = meta.get("qualname", r["label"])
        by_id[r["id"]] = q
        if r["type"] != "module":
            defs[q] = (r["type"], meta.get("path"), meta.get("line"), meta.get("end_line"))
        else:
            modules.add(q)
    parent = {}
    for s, d in conn.execute("SELECT src, dst FROM edges WHERE type='contains'"):
        if s in by_id and d in by_id:
            parent[by_id[d]] = by_id[s]
    uses, inherits = set(), set()
    where: dict[tuple[str, str], str] = {}  # (user, target) -> "line resolution" of one of our edges (for dumps)
    for s, d, t, line, how in conn.execute(
            "SELECT src, dst, type, json_extract(metadata, '$.line'), json_extract(metadata, '$.resolution')"
            " FROM edges WHERE type IN ('calls','references','inherits','decorates')"):
        if s not in by_id or d not in by_id:
            continue
        if t == "inherits":
            inherits.add((by_id[s], by_id[d]))
        elif t == "decorates":
            p = parent.get(by_id[d])
            if p:
                uses.add((p, by_id[s]))
                where.setdefault((p, by_id[s]), f"{line} decorates")
        elif by_id[s] != by_id[d]:
            uses.add((by_id[s], by_id[d]))
            where.setdefault((by_id[s], by_id[d]), f"{line} {t} {how}")
    our_graph.where = where
    return defs, parent, uses, inherits, modules


def compare(docs: list[dict], defs: dict, modules: set, src: Path, label_prefix: str) -> dict:
    """Precision/recall of our definitions and edges against the SCIP documents."""
    scip_defs: set[str] = set()
    scip_def_keys: dict[str, tuple[str, str]] = {}  # qualified name -> (path, short name)
    scip_def_lines: dict[str, int] = {}  # qualified name -> line of its (first) definition occurrence
    scip_inherits: set[tuple[str, str]] = set()
    occ_by_file: dict[str, list] = {}
    for doc in docs:
        if not doc["path"].endswith((".py", ".ts", ".tsx")) or doc["path"].endswith(".d.ts"):
            continue
        occ_by_file[doc["path"]] = doc["occurrences"]
        for rng, sym, roles in doc["occurrences"]:
            if roles & 1:
                q = scip_qualname(sym)
                if q and q[0] not in modules:
                    scip_defs.add(q[0])
                    scip_def_keys.setdefault(q[0], (doc["path"], q[0].rsplit(".", 1)[-1]))
                    scip_def_lines.setdefault(q[0], rng[0] + 1)
        for sym, rels in doc["symbols"]:
            q = scip_qualname(sym)
            if not q or q[1] != "type":
                continue
            for other, is_impl in rels:
                b = scip_qualname(other)
                if is_impl and b and b[1] == "type":
                    scip_inherits.add((q[0], b[0]))
    # innermost of our definitions holding a line, per file
    spans: dict[str, list] = {}
    for q, (t, path, line, end) in defs.items():
        if path and line:
            spans.setdefault(path, []).append((line, end or line, q, t))
    for path, items in spans.items():  # self.x = ... inside a method is used by the method, not by x
        scopes = [(a, b, t) for a, b, _q, t in items if t in ("function", "method", "class")]

        def in_function(line: int) -> bool:  # the innermost function/method/class holding it is a function
            inner = [(a, t) for a, b, t in scopes if a < line <= b]
            return bool(inner) and max(inner)[1] in ("function", "method")
        spans[path] = [(a, b, q) for a, b, q, t in items if t != "attribute" or not in_function(a)]
    scip_uses: set[tuple[str, str]] = set()
    scip_where: dict[tuple[str, str], str] = {}  # (user, target) -> "path:line: source" of one occurrence
    mislabelled = 0
    unsure: set[str] = set()  # definitions holding an occurrence the indexer mislabelled
    for rel, occs in occ_by_file.items():
        path = f"{label_prefix}{rel}"
        try:
            text = (src / rel).read_text(encoding="utf-8")
            if rel.endswith(".py"):
                tree = ast.parse(text)
                import_lines = {ln for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                                for ln in range(n.lineno, (n.end_lineno or n.lineno) + 1)}
                module = rel.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
            else:
                from opensage.plugins.graph_memory.ingest_ts import _parser

                root = _parser("tsx" if rel.endswith(".tsx") else "typescript").parse(text.encode()).root_node
                import_lines = {ln for n in root.named_children
                                if n.type == "import_statement" or (n.type == "export_statement"
                                                                    and n.child_by_field_name("source") is not None)
                                for ln in range(n.start_point[0] + 1, n.end_point[0] + 2)}
                stem = rel.rsplit(".", 1)[0]
                module = (stem[: -len("/index")] if stem.endswith("/index") else stem).replace("/", ".")
        except (SyntaxError, UnicodeDecodeError):
            continue
        lines = text.splitlines()
        file_spans = sorted(spans.get(path, []), key=lambda s: (s[0], -s[1]))
        for rng, sym, roles in occs:
            if roles & 1:
                continue
            line = rng[0] + 1
            if line in import_lines:
                continue
            q = scip_qualname(sym)
            if not q or q[0] not in scip_defs:
                continue
            user = module
            for start, end, dq in file_spans:
                if start <= line <= end:
                    user = dq  # later (inner) spans override outer ones
            target = q[0]
            if len(rng) == 3 and rng[0] < len(lines):
                written = lines[rng[0]][rng[1]:rng[2]]
                cls_name = target.rsplit(".", 2)[-2] if target.count(".") > 1 else None
                if target.endswith(".__init__") and written == cls_name:
                    target = target.rsplit(".", 1)[0]  # Foo(...) is labelled Foo.__init__; here it is the class
                elif written and written != target.rsplit(".", 1)[-1]:
                    mislabelled += 1  # the indexer named another symbol than the one written here
                    unsure.add(user)
                    continue
            if user != target:
                scip_uses.add((user, target))
                scip_where.setdefault((user, target), f"{path}:{line}: {lines[rng[0]].strip()[:160]}")
    scip_inherits = {(a, b) for a, b in scip_inherits if a in scip_defs and b in scip_defs}  # project classes
    return {"scip_defs": scip_defs, "scip_uses": scip_uses, "scip_inherits": scip_inherits,
            "mislabelled": mislabelled, "unsure": unsure, "where": scip_where, "scip_def_keys": scip_def_keys,
            "scip_def_lines": scip_def_lines}


def pr(ours: set, oracle: set) -> tuple[float, float, int, int]:
    hit = len(ours & oracle)
    return (hit / len(ours) if ours else float("nan"), hit / len(oracle) if oracle else float("nan"),
            len(ours), len(oracle))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", default="networkx==3.5", help="PyPI requirement name==version (a pure-Python wheel)")
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/opensage-bench/codegraph"))
    ap.add_argument("--no-scip", action="store_true", help="skip the SCIP oracle (no node/npm needed)")
    ap.add_argument("--symbols", type=int, default=200, help="symbols sampled for the query timings")
    ap.add_argument("--dump-misses", metavar="FILE", default=os.environ.get("CODEGRAPH_DUMP"),
                    help="write the missed and extra definitions/edges vs SCIP as JSON to FILE (dev projects: "
                         "held-out ones are not to be looked at); also the CODEGRAPH_DUMP environment variable")
    ap.add_argument("--src", default="src", help="npm projects: the package folder holding the TypeScript sources")
    args = ap.parse_args()
    if args.dump_misses and args.project in HELD_OUT:
        ap.error(f"--dump-misses: {args.project} is a held-out project (only its totals are reported); "
                 f"dump the misses of a dev project instead: {', '.join(DEV)}")
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    typescript = args.project.startswith("npm:")
    deb = args.project.startswith("deb:")
    if deb:
        src, name = fetch_deb(args.project[4:], cache)
        version = args.project.partition("=")[2]
    elif typescript:
        spec = args.project[4:]
        version = spec.rpartition("@")[2]
        src, name = fetch_npm(spec, cache), args.src
    else:
        name, _, version = args.project.partition("==")
        src = fetch_project(args.project, cache)
    lang = "typescript" if typescript else "python"
    if deb:
        lang = "go" if (src / name / "go.mod").exists() else "rust"
    suffix = {"typescript": "*.ts", "python": "*.py", "go": "*.go", "rust": "*.rs"}[lang]
    os.environ.pop("OPENSAGE_MODEL", None)
    rows: list[tuple[str, str]] = []
    result: dict = {"bench": "codegraph", "project": args.project, "language": lang,
                    "split": "dev" if args.project in DEV else "held-out" if args.project in HELD_OUT else "unsplit"}
    with tempfile.TemporaryDirectory() as ws:
        ws = Path(ws)
        shutil.copytree(src / name, ws / name)
        files = sum(1 for _ in (ws / name).rglob(suffix))
        host = Host(Workspace(ws))
        t0 = time.perf_counter()
        d = host.run("memory-ingest", {"path": name}).data
        ingest_ms = (time.perf_counter() - t0) * 1000
        rows.append(("ingest (first)", f"{ingest_ms:.0f} ms: {d['files']} files, {d['classes']} classes, "
                     f"{d['functions']} functions, {d['methods']} methods, {d['variables']} variables, "
                     f"{d['attributes']} attributes, {d['edges']} edges, {len(d['errors'])} skipped"))
        result.update(files=files, ingest_ms=round(ingest_ms), nodes=d["nodesAdded"], edges=d["edges"])

        # incremental: one edited file
        conn = host.db.conn
        py = sorted((p for p in (ws / name).rglob(suffix) if not p.name.endswith(".d.ts")),
                    key=lambda f: (-f.stat().st_size, str(f)))
        target = py[len(py) // 2]  # a median-sized file
        target.write_text(target.read_text() + {
            "typescript": "\nexport function bench_added() { return 1; }\n",
            "python": "\n\ndef bench_added(G):\n    return nodes(G)\n",
            "go": "\nfunc benchAdded() int { return 1 }\n",
            "rust": "\npub fn bench_added() -> i32 { 1 }\n"}[lang])
        t0 = time.perf_counter()
        d1 = host.run("memory-ingest", {"path": str(target.relative_to(ws))}).data
        inc_ms = (time.perf_counter() - t0) * 1000
        rows.append((f"re-ingest 1 edited file ({target.relative_to(ws)})", f"{inc_ms:.0f} ms: nodes +{d1['nodesAdded']} ~{d1['nodesUpdated']} "
                     f"-{d1['nodesRemoved']}, edges +{d1['edgesAdded']} -{d1['edgesRemoved']}"))
        t0 = time.perf_counter()
        d2 = host.run("memory-ingest", {"path": name}).data
        inc_all_ms = (time.perf_counter() - t0) * 1000
        rows.append(("re-ingest folder, nothing changed", f"{inc_all_ms:.0f} ms: {d2['changed']} changed, "
                     f"nodes +{d2['nodesAdded']} ~{d2['nodesUpdated']}, edges +{d2['edgesAdded']} -{d2['edgesRemoved']}"))
        result.update(reingest_file_ms=round(inc_ms), reingest_file_nodes_updated=d1["nodesUpdated"],
                      reingest_file_nodes_added=d1["nodesAdded"], reingest_folder_ms=round(inc_all_ms))

        # query latency
        cg = CodeGraph(graph_for(host))
        rng = random.Random(14)
        syms = [r[0] for r in conn.execute(
            "SELECT label FROM nodes WHERE type IN ('class','function','method') ORDER BY id")]
        classes = [r[0] for r in conn.execute("SELECT label FROM nodes WHERE type='class' ORDER BY id")]
        files_l = [r[0] for r in conn.execute("SELECT label FROM nodes WHERE type='file' ORDER BY id")]
        sample = rng.sample(syms, min(args.symbols, len(syms)))
        times: dict[str, list[float]] = {r: [] for r in POINT_RELATIONS}
        made_up_no = 0
        for i, sym in enumerate(sample):
            for rel in POINT_RELATIONS:
                q = sym
                if rel == "members":
                    q = classes[i % len(classes)]
                elif rel == "implementors":
                    q = classes[(i * 7) % len(classes)]
                elif rel == "file-symbols":
                    q = files_l[i % len(files_l)]
                elif rel == "exists" and i % 2:
                    q = sym + "_teleport"
                t0 = time.perf_counter()
                try:
                    _, hits, _ = cg.ask(rel, q, None, None, 50)
                except Exception:  # an ambiguous short name is a valid answer too
                    hits = None
                times[rel].append((time.perf_counter() - t0) * 1000)
                if rel == "exists" and i % 2 and hits == []:
                    made_up_no += 1
        t0 = time.perf_counter()
        unused = cg.ask("unused", "", None, ["function"], 50)[1]
        unused_ms = (time.perf_counter() - t0) * 1000
        all_point = [t for ts in times.values() for t in ts]
        for rel, ts in times.items():
            rows.append((f"query {rel}", f"p50 {pct(ts, .5):.3f} ms, p95 {pct(ts, .95):.3f} ms (n={len(ts)})"))
        rows.append(("query, all point relations", f"p50 {pct(all_point, .5):.3f} ms, p95 {pct(all_point, .95):.3f} ms"))
        rows.append(("query unused functions (scan)", f"{unused_ms:.1f} ms, {len(unused)} shown"))
        rows.append(("made-up names answered 'no'", f"{made_up_no} of {len(sample) // 2}"))
        result.update(query_p50_ms=round(pct(all_point, .5), 4), query_p95_ms=round(pct(all_point, .95), 4),
                      query_p95_by_relation={r: round(pct(ts, .95), 4) for r, ts in times.items()},
                      unused_ms=round(unused_ms, 1), made_up_no=made_up_no, made_up_asked=len(sample) // 2)

        # SCIP oracle
        mods = None if args.no_scip or deb else npm_tools(cache)
        if deb:
            rows.append(("SCIP oracle", f"none for {lang} here: scip-go and rust-analyzer do not install from the "
                         "package registries this bench may use (PyPI, npm, Debian); counts and a sample to check "
                         "by hand below"))
            result["scip"] = None
            edges = conn.execute(
                "SELECT e.type, s.label, d.label, json_extract(e.metadata, '$.line'), json_extract(s.metadata, '$.path'),"
                " json_extract(e.metadata, '$.resolution') FROM edges e JOIN nodes s ON s.id = e.src"
                " JOIN nodes d ON d.id = e.dst WHERE e.type IN ('calls', 'references', 'inherits') ORDER BY e.id"
            ).fetchall()
            by_type: dict[str, int] = {}
            for e in edges:
                by_type[e[0]] = by_type.get(e[0], 0) + 1
            rows.append(("edges by type", ", ".join(f"{k} {v}" for k, v in sorted(by_type.items()))))
            result["edges_by_type"] = by_type
            for e in random.Random(14).sample(list(edges), min(12, len(edges))):
                rows.append((f"sample {e[0]}", f"{e[1]} -> {e[2]}  ({e[4]}:{e[3]}, {e[5] or ''})"))
        elif mods is None:
            rows.append(("SCIP oracle", "skipped (--no-scip, or node/npm missing)"))
            result["scip"] = None
        else:
            index = (scip_index_ts(src / name, spec, cache, mods) if typescript
                     else scip_index(src, name, version, cache, mods))
            docs = decode_scip(index)
            defs, parent, uses, inherits, modules = our_graph(conn)
            defs = {q: v for q, v in defs.items() if not q.endswith(".bench_added")}
            uses = {u for u in uses if "bench_added" not in u[0]}
            oracle = compare(docs, defs, modules, src / name if typescript else src, f"{name}/" if typescript else "")
            sk = oracle["scip_def_keys"]
            # the same definition named differently (scip-python calls a function nested in a method
            # Class.inner, and an attribute of a class nested in a function module.Class.x): map
            # SCIP's name to ours through the definition's site, (file, short name, line), else
            # through a unique (file, short name)
            by_pn: dict[tuple[str, str], list[str]] = {}
            by_pnl: dict[tuple[str, str, int], list[str]] = {}
            for q, (_t, path, line, _e) in defs.items():
                by_pn.setdefault((path, q.rsplit(".", 1)[-1]), []).append(q)
                by_pnl.setdefault((path, q.rsplit(".", 1)[-1], line), []).append(q)
            sl = oracle["scip_def_lines"]
            alias = {}
            for q, pn in sk.items():
                if q in defs:
                    continue
                site = by_pnl.get((*pn, sl.get(q)), ())
                if len(site) == 1:
                    alias[q] = site[0]
                elif len(by_pn.get(pn, ())) == 1:
                    alias[q] = by_pn[pn][0]
            oracle["scip_uses"] = {(u, alias.get(t, t)) for u, t in oracle["scip_uses"]}
            oracle["where"] = {(u, alias.get(t, t)): w for (u, t), w in oracle["where"].items()}
            our_pn = {(path, q.rsplit(".", 1)[-1]) for q, (_t, path, _l, _e) in defs.items()}
            scip_pn = set(sk.values())
            found = {q for q, pn in sk.items() if q in defs or pn in our_pn}
            right = {q for q, (_t, path, _l, _e) in defs.items() if q in sk or (path, q.rsplit(".", 1)[-1]) in scip_pn}
            rd = (len(right) / len(defs), len(found) / len(sk), len(defs), len(sk))
            our_keys, missed_keys = set(defs) - right, set(sk) - found
            ours_uses = {u for u in uses if u[1] in oracle["scip_defs"] or u[1] in defs}
            ru_all = pr(ours_uses, oracle["scip_uses"])
            unsure = oracle["unsure"]
            users = {u for u, _ in ours_uses} | {u for u, _ in oracle["scip_uses"]}
            ours_uses = {u for u in ours_uses if u[0] not in unsure}
            ru = pr(ours_uses, {u for u in oracle["scip_uses"] if u[0] not in unsure})
            if typescript:  # scip-typescript lists every ancestor: compare the transitive closures
                closure, direct = set(), {}
                for a, b in inherits:
                    direct.setdefault(a, set()).add(b)
                for a in direct:
                    stack, seen = list(direct[a]), set()
                    while stack:
                        b = stack.pop()
                        if b not in seen:
                            seen.add(b)
                            stack.extend(direct.get(b, ()))
                    closure |= {(a, b) for b in seen}
                inherits = closure
            ri = pr(inherits, oracle["scip_inherits"])
            for label, (p, r, n_ours, n_oracle) in (
                    ("definitions", rd), ("call+reference edges, all users", ru_all),
                    (f"call+reference edges, {len(users - unsure)} of {len(users)} users indexed consistently", ru),
                    ("inherits edges", ri)):
                rows.append((f"vs SCIP: {label}", f"precision {p:.3f}, recall {r:.3f} (ours {n_ours}, SCIP {n_oracle})"))
            oracle_kept = {u for u in oracle["scip_uses"] if u[0] not in unsure}
            by_how: dict[str, list[int]] = {}
            for u in ours_uses:
                how = our_graph.where.get(u, "? ?").split(" ", 1)[-1]
                by_how.setdefault(how, [0, 0])[0] += 1
                by_how[how][1] += u in oracle_kept
            rows.append(("our call+reference edges by resolution (hits/ours)", ", ".join(
                f"{how} {hit}/{n}" for how, (n, hit) in sorted(by_how.items(), key=lambda kv: -kv[1][0]))))
            rows.append(("SCIP occurrences dropped", f"{oracle['mislabelled']} whose written name is not the "
                         "name of the symbol the indexer gave them (indexer errors)"))
            result["scip"] = {
                "indexer": SCIP_TYPESCRIPT if typescript else SCIP_PYTHON,
                "mislabelled_occurrences_dropped": oracle["mislabelled"],
                "definitions": {"precision": round(rd[0], 4), "recall": round(rd[1], 4), "ours": rd[2], "scip": rd[3]},
                "uses": {"precision": round(ru[0], 4), "recall": round(ru[1], 4), "ours": ru[2], "scip": ru[3],
                         "users_kept": len(users - unsure), "users": len(users)},
                "uses_all_users": {"precision": round(ru_all[0], 4), "recall": round(ru_all[1], 4)},
                "uses_by_resolution": {how: {"ours": n, "hits": hit} for how, (n, hit) in by_how.items()},
                "inherits": {"precision": round(ri[0], 4), "recall": round(ri[1], 4), "ours": ri[2], "scip": ri[3]},
            }
            if args.dump_misses:
                dump = Path(args.dump_misses)
                dump.write_text(json.dumps({
                    "missed_defs": sorted(missed_keys)[:400],
                    "extra_defs": sorted(our_keys)[:400],
                    # the headline row's misses (users indexed consistently), with where they occur
                    "missed_uses": [[u, t, oracle["where"].get((u, t), "")] for u, t in sorted(
                        {x for x in oracle["scip_uses"] if x[0] not in unsure} - ours_uses)][:50000],
                    "extra_uses": [[u, t, our_graph.where.get((u, t), "")] for u, t in sorted(
                        ours_uses - oracle["scip_uses"])][:50000],
                    "missed_inherits": sorted(map(list, oracle["scip_inherits"] - inherits))[:200],
                    "extra_inherits": sorted(map(list, inherits - oracle["scip_inherits"]))[:200],
                }, indent=1))
        host.close()
    width = max(len(r[0]) for r in rows)
    print(f"{'step':<{width}}  result")
    for label, note in rows:
        print(f"{label:<{width}}  {note}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
