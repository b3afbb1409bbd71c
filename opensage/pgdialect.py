"""The SQLite SQL the plugins write, run on PostgreSQL (issue 16).

Plugins write one dialect, SQLite's, through ``db.conn.execute(sql, params)``. The
PostgreSQL store (:mod:`opensage.pgstore`) passes each statement through
:func:`translate` once (cached per statement text) and runs the result with psycopg.
:func:`translate` knows a fixed list of constructs and changes nothing else:

==========================================  ==============================================
SQLite                                      PostgreSQL
==========================================  ==============================================
``?`` placeholders, ``%`` in the text        ``%s``, ``%%`` (psycopg's paramstyle)
``INSERT OR IGNORE INTO t ...``              ``INSERT INTO t ... ON CONFLICT DO NOTHING``
``INSERT OR REPLACE INTO t(cols) ...``       ``... ON CONFLICT (key of t) DO UPDATE SET``
``x LIKE y``                                 ``x ILIKE y`` (SQLite's LIKE ignores ASCII case)
``x IS y`` / ``x IS NOT y`` (y not NULL)     ``IS NOT DISTINCT FROM`` / ``IS DISTINCT FROM``
``WHERE 1``                                  ``WHERE true``
``json_extract(d, '$.k')``                   ``opensage_json_int``/``_text(d, 'k')`` (typed by key)
``json_each(?)``                             ``jsonb_array_elements_text(%s::jsonb)``
``FROM (subquery)`` without an alias         ``FROM (subquery) AS _sN`` (PostgreSQL 15 needs one)
``x IN (?, ?, ...)``                         ``x = ANY(%s)`` with one array (one text, planned once)
``t_fts MATCH ?`` (FTS5)                     ``t_fts.tsv @@ to_tsquery('opensage', %s)``
``bm25(t_fts, w...)``                        ``-ts_rank(weights, t_fts.tsv, query)``
``PRAGMA data_version``                      ``SELECT opensage_data_version()``
``sqlite_master``                            a view of ``information_schema.tables``
``INSERT INTO <table with id> ...``          ``... RETURNING id`` (for ``cursor.lastrowid``)
==========================================  ==============================================

The MATCH argument, an FTS5 expression of quoted words joined by ``OR``/``AND`` (what
:mod:`opensage.plugins.graph_memory.ranking` builds), becomes a ``tsquery``
(:func:`fts5_to_tsquery`). ``bm25()`` becomes ``ts_rank`` with the same column weights:
PostgreSQL's ranking counts term frequency and the column weights but no inverse
document frequency, so orders differ from FTS5's BM25 (measured by ``bench/locomo.py
--db``; docs/team.md).

Anything else SQLite-only (another ``PRAGMA``, ``executescript``, ``WITHOUT ROWID``) raises
:class:`UnsupportedSQL` naming the construct, so a new query that needs translation fails
its PostgreSQL test instead of misbehaving.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

__all__ = ["translate", "fts5_to_tsquery", "Translated", "UnsupportedSQL", "SERIAL_TABLES"]


class UnsupportedSQL(Exception):
    """A statement uses an SQLite construct the PostgreSQL store does not translate."""


#: Tables whose ``id`` PostgreSQL generates (``cursor.lastrowid`` reads ``RETURNING id``).
SERIAL_TABLES = frozenset({"nodes", "edges", "episodes", "tool_runs"})

#: The key ``INSERT OR REPLACE`` replaces on (SQLite: any unique constraint; here: this one).
REPLACE_KEYS = {
    "embeddings": ("kind", "id", "model"),
    "memory_upkeep": ("key",),
    "tool_state": ("tool", "state_id"),
}
#: Extra assignments of an ``INSERT OR REPLACE`` turned update (SQLite's replace makes a new
#: row; the embeddings cache notices changes by its largest ``rowid``).
REPLACE_EXTRA = {"embeddings": "rowid = nextval('embeddings_rowid_seq')"}

#: json keys read as integers (numbers, and booleans as 1/0 like SQLite's json_extract).
JSON_INT_KEYS = frozenset({"line", "end_line", "col", "property", "package", "external", "nested", "exported"})

#: FTS5 tables → their ranked columns' ``setweight`` class, in FTS5 column order.
FTS_TABLES = {"nodes_fts": ("A", "B", "C"), "episodes_fts": ("A", "B", "C", "D")}

_KEYWORDS = {
    "where", "join", "cross", "inner", "left", "right", "full", "on", "order", "group", "limit",
    "union", "natural", "using", "having", "offset", "except", "intersect", "window", "returning",
}


@dataclass(frozen=True)
class Translated:
    """One translated statement: ``sql`` for psycopg and how to build its parameters.

    ``plan`` has one entry per ``%s``: an int is the index of the caller's parameter to
    pass as is; ``("tsquery", i, table)`` is caller parameter ``i`` (an FTS5 expression)
    turned into tsquery text; ``("array", i, n)`` is caller parameters ``i .. i+n-1`` as
    one array (an ``IN (?, ...)`` list made ``= ANY(%s)``). ``returning_id``: the statement ends in ``RETURNING id``.
    """

    sql: str
    plan: tuple
    returning_id: bool = False
    rewrote_match: bool = False


_LITERAL = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")


def _protect(sql: str) -> tuple[str, list[str]]:
    """Replace string literals and quoted identifiers by ``\\x00N\\x00`` markers."""
    saved: list[str] = []

    def keep(m: re.Match) -> str:
        saved.append(m.group(0))
        return f"\x00{len(saved) - 1}\x00"

    return _LITERAL.sub(keep, sql), saved


def _restore(code: str, saved: list[str]) -> str:
    return re.sub("\x00(\\d+)\x00", lambda m: saved[int(m.group(1))], code)


def _literal_value(marker: str, saved: list[str]) -> str | None:
    m = re.fullmatch("\\s*\x00(\\d+)\x00\\s*", marker)
    if not m:
        return None
    lit = saved[int(m.group(1))]
    return lit[1:-1].replace("''", "'") if lit.startswith("'") else None


def _matching_paren(code: str, open_at: int) -> int:
    depth = 0
    for i in range(open_at, len(code)):
        if code[i] == "(":
            depth += 1
        elif code[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    raise UnsupportedSQL("unbalanced parentheses")


def _split_args(text: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [a.strip() for a in out]


def _rewrite_calls(code: str, name: str, fn) -> str:
    """Replace every ``name(args)`` call (case-insensitive) by ``fn(args) -> str``."""
    pat = re.compile(rf"\b{name}\s*\(", re.I)
    pos = 0
    while True:
        m = pat.search(code, pos)
        if not m:
            return code
        close = _matching_paren(code, m.end() - 1)
        replacement = fn(_split_args(code[m.end():close]))
        code = code[:m.start()] + replacement + code[close + 1:]
        pos = m.start() + len(replacement)


def _alias_subqueries(code: str) -> str:
    """Give every ``FROM (subquery)`` without an alias one (PostgreSQL < 16 requires it)."""
    n = 0
    pos = 0
    pat = re.compile(r"\b(FROM|JOIN)\s*\(", re.I)
    while True:
        m = pat.search(code, pos)
        if not m:
            return code
        close = _matching_paren(code, m.end() - 1)
        inner = code[m.end():close].lstrip()
        rest = code[close + 1:]
        word = re.match(r"\s*(AS\b|[A-Za-z_]\w*)?", rest)
        nxt = (word.group(1) or "").lower() if word else ""
        if inner[:6].lower() in ("select", "with r", "values") or inner[:4].lower() == "with":
            if not nxt or nxt in _KEYWORDS:
                n += 1
                code = code[:close + 1] + f" AS _s{n}" + rest
        pos = m.end()


_ORDER_END = re.compile(r"\b(LIMIT|OFFSET|UNION|EXCEPT|INTERSECT|FOR)\b", re.I)


def _order_nulls(code: str) -> str:
    """SQLite sorts NULL first in ascending order and last in descending order; say so."""
    out, pos = [], 0
    for m in re.finditer(r"\bORDER\s+BY\b", code, re.I):
        if m.start() < pos:
            continue
        out.append(code[pos:m.end()])
        i, depth, start = m.end(), 0, m.end()
        while i < len(code):
            ch = code[i]
            if ch == "(":
                depth += 1
            elif ch == ")":
                if depth == 0:
                    break
                depth -= 1
            elif depth == 0 and _ORDER_END.match(code, i) and (i == 0 or not code[i - 1].isalnum()):
                break
            i += 1
        items = _split_args(code[start:i])
        fixed = []
        for item in items:
            if re.search(r"\bNULLS\b", item, re.I) or not item:
                fixed.append(item)
            elif re.search(r"\bDESC$", item, re.I):
                fixed.append(item + " NULLS LAST")
            else:
                fixed.append(item + " NULLS FIRST")
        out.append(" " + ", ".join(fixed) + (" " if i < len(code) else ""))
        pos = i
    out.append(code[pos:])
    return "".join(out)


def _fts_aliases(code: str) -> dict[str, str]:
    """FTS table → the name its columns are reached by in this statement (alias or itself)."""
    out = {}
    for table in FTS_TABLES:
        m = re.search(rf"\b(?:FROM|JOIN)\s+{table}\b(?:\s+(?:AS\s+)?([A-Za-z_]\w*))?", code, re.I)
        if m:
            alias = m.group(1)
            out[table] = alias if alias and alias.lower() not in _KEYWORDS else table
    return out


def _json_extract(args: list[str], saved: list[str]) -> str:
    if len(args) != 2:
        raise UnsupportedSQL("json_extract with other than two arguments")
    path = _literal_value(args[1], saved)
    if path is None or not re.fullmatch(r"\$\.[A-Za-z_]\w*", path):
        raise UnsupportedSQL(f"json_extract path {args[1]!r}: only '$.key' is translated")
    key = path[2:]
    fn = "opensage_json_int" if key in JSON_INT_KEYS else "opensage_json_text"
    return f"{fn}({args[0]}, '{key}')"


def _weights(table: str, args: list[str]) -> str:
    classes = FTS_TABLES[table]
    given = [float(a) for a in args[1:]] or [1.0] * len(classes)
    given += [1.0] * (len(classes) - len(given))
    by_class = dict(zip(classes, given))
    top = max(given) or 1.0
    # ts_rank's weight array is {D, C, B, A}
    return "'{" + ", ".join(f"{by_class.get(c, 0.0) / top:.6g}" for c in "DCBA") + "}'"


@functools.lru_cache(maxsize=4096)
def translate(sql: str) -> Translated:
    """The PostgreSQL form of one SQLite statement (see the module docstring for the list).

    :param sql: one statement in the SQLite dialect, ``?`` placeholders.
    :returns: a :class:`Translated` (cached per statement text).
    :raises UnsupportedSQL: a construct outside the list above.
    """
    code, saved = _protect(sql)
    low = code.lower()
    if re.match(r"\s*pragma\s+data_version\s*$", low):
        return Translated("SELECT opensage_data_version()", ())
    if re.match(r"\s*pragma\b", low):
        raise UnsupportedSQL(f"PRAGMA is SQLite-only: {sql.strip()[:80]!r}")
    if "without rowid" in low:
        raise UnsupportedSQL("WITHOUT ROWID is SQLite-only (schema migrations need a PostgreSQL form)")

    # -- INSERT OR IGNORE / OR REPLACE -------------------------------------------------
    suffix = ""
    m = re.match(r"(\s*)INSERT\s+OR\s+(IGNORE|REPLACE)\s+INTO\s+([A-Za-z_]\w*)\s*(\(([^)]*)\))?", code, re.I)
    table = None
    if m:
        how, table = m.group(2).upper(), m.group(3).lower()
        code = m.group(1) + "INSERT INTO " + code[m.start(3):]
        if how == "IGNORE":
            suffix = " ON CONFLICT DO NOTHING"
        else:
            key = REPLACE_KEYS.get(table)
            if key is None or not m.group(5):
                raise UnsupportedSQL(f"INSERT OR REPLACE into {table}: no replace key known")
            cols = [c.strip().lower() for c in m.group(5).split(",")]
            sets = [f"{c} = EXCLUDED.{c}" for c in cols if c not in key]
            if table in REPLACE_EXTRA:
                sets.append(REPLACE_EXTRA[table])
            suffix = f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {', '.join(sets)}"
    else:
        im = re.match(r"\s*INSERT\s+INTO\s+([A-Za-z_]\w*)", code, re.I)
        table = im.group(1).lower() if im else None

    # -- functions -----------------------------------------------------------------------
    if re.search(r"\bjson_extract\s*\(", code, re.I):
        code = _rewrite_calls(code, "json_extract", lambda a: _json_extract(a, saved))
    code = re.sub(r"\bjson_each\s*\(\s*\?\s*\)", "jsonb_array_elements_text(?::jsonb) AS value", code, flags=re.I)
    code = re.sub(r"\bsqlite_master\b",
                  "(SELECT 'table' AS type, table_name AS name FROM information_schema.tables"
                  " WHERE table_schema = current_schema()) AS sqlite_master", code, flags=re.I)

    # -- FTS5 ------------------------------------------------------------------------------
    aliases = _fts_aliases(code)
    rewrote_match = False
    match_of: dict[str, str] = {}
    if aliases:
        for table_fts, alias in aliases.items():
            def literal_match(lm: re.Match, table_fts=table_fts, alias=alias) -> str:
                text = _literal_value(lm.group(1), saved) or ""
                saved.append("'" + fts5_to_tsquery(text, table_fts).replace("'", "''") + "'")
                match_of[table_fts] = alias
                return f"{alias}.tsv @@ to_tsquery('opensage', \x00{len(saved) - 1}\x00)"

            code = re.sub(rf"\b{table_fts}\s+MATCH\s+(\x00\d+\x00)", literal_match, code, flags=re.I)
            pat = re.compile(rf"\b{table_fts}\s+MATCH\s+\?", re.I)
            if pat.search(code):
                rewrote_match = True
                code = pat.sub(f"{alias}.tsv @@ to_tsquery('opensage', \x01{table_fts}\x01)", code)
                match_of[table_fts] = alias

        def bm25(args: list[str]) -> str:
            t = args[0].strip().lower()
            if t not in FTS_TABLES or t not in match_of:
                raise UnsupportedSQL(f"bm25({args[0]}) without a MATCH on it")
            # normalization 1: rank / (1 + log(document length)), a length penalty as BM25 has
            return (f"(-ts_rank({_weights(t, args)}, {match_of[t]}.tsv, "
                    f"to_tsquery('opensage', \x02{t}\x02), 1))")

        code = _rewrite_calls(code, "bm25", bm25)
    elif re.search(r"\bMATCH\b|\bbm25\s*\(", code, re.I):
        raise UnsupportedSQL("MATCH/bm25 outside FROM <fts table>")

    # -- small operators -------------------------------------------------------------------
    code = re.sub(r"\s+(?:INDEXED\s+BY\s+\w+|NOT\s+INDEXED)\b", "", code, flags=re.I)  # SQLite planner hints
    # SQLite accepts CROSS JOIN ... ON (an inner join the planner may not reorder)
    code = re.sub(r"\bCROSS\s+JOIN(\s+\w+(?:\s+(?:AS\s+)?(?!ON\b)\w+)?\s+ON)\b", r"JOIN\1", code, flags=re.I)
    code = re.sub(r"\bNOT\s+LIKE\b", "NOT ILIKE", code, flags=re.I)
    code = re.sub(r"(?<!NOT )(?<!I)\bLIKE\b", "ILIKE", code, flags=re.I)
    code = re.sub(r"\bIS\s+NOT\s+(?!NULL\b|DISTINCT\b|TRUE\b|FALSE\b)", "IS DISTINCT FROM ", code, flags=re.I)
    code = re.sub(r"\bIS\s+(?!NOT\b|NULL\b|DISTINCT\b|TRUE\b|FALSE\b)", "IS NOT DISTINCT FROM ", code, flags=re.I)
    code = re.sub(r"\bWHERE\s+1\b(?!\s*[=<>!])", "WHERE true", code, flags=re.I)
    code = re.sub(r"\bAS\s+REAL\b", "AS double precision", code, flags=re.I)
    code = _alias_subqueries(code)
    code = _order_nulls(code)
    # IN (?,?,...) -> = ANY(array): one statement text whatever the list's length, so the
    # server plans it once (psycopg prepares a text it has seen a few times)
    code = re.sub(r"\b(NOT\s+)?IN\s*\(\s*\?(?:\s*,\s*\?)*\s*\)",
                  lambda m: f"\x03{'N' if m.group(1) else 'I'}{m.group(0).count('?')}\x03", code, flags=re.I)

    # -- placeholders: build the parameter plan in text order ------------------------------
    plan: list = []
    out = []
    caller = 0
    match_param: dict[str, int] = {}
    # first pass: which caller parameter each MATCH binds (in order of '?' and \x01 markers)
    idx = 0
    for tok in re.finditer("\\?|\x01(\\w+)\x01|\x03[IN](\\d+)\x03", code):
        if tok.group(0) == "?":
            idx += 1
        elif tok.group(2):
            idx += int(tok.group(2))
        else:
            match_param[tok.group(1)] = idx
            idx += 1
    for part in re.split("(\\?|\x01\\w+\x01|\x02\\w+\x02|\x03[IN]\\d+\x03)", code):
        if part.startswith("\x03"):
            n = int(part[2:-1])
            plan.append(("array", caller, n))
            caller += n
            out.append("<> ALL(%s)" if part[1] == "N" else "= ANY(%s)")
        elif part == "?":
            plan.append(caller)
            caller += 1
            out.append("%s")
        elif part.startswith("\x01"):
            plan.append(("tsquery", caller, part[1:-1]))
            caller += 1
            out.append("%s")
        elif part.startswith("\x02"):
            plan.append(("tsquery", match_param[part[1:-1]], part[1:-1]))
            out.append("%s")
        else:
            out.append(part.replace("%", "%%"))
    code = "".join(out)
    text = _restore(code, [s.replace("%", "%%") for s in saved])

    returning = False
    if table in SERIAL_TABLES and re.match(r"\s*INSERT\b", text, re.I) and not re.search(r"\bRETURNING\b", text, re.I):
        text = text.rstrip().rstrip(";") + suffix + " RETURNING id"
        returning = True
    elif suffix and re.search(r"\bRETURNING\b", text, re.I):
        m = list(re.finditer(r"\bRETURNING\b", text, re.I))[-1]
        text = text[:m.start()].rstrip() + suffix + " " + text[m.start():].rstrip().rstrip(";")
    else:
        text = text.rstrip().rstrip(";") + suffix
    return Translated(text, tuple(plan), returning, rewrote_match)


_FTS_TOKEN = re.compile(
    r'([A-Za-z_]\w*)\s*:(?!\*)|"((?:[^"]|"")*)"(\*?)|(\bOR\b|\bAND\b|\bNOT\b)|([^\s"():]+)(\*?)|([()])')

#: FTS5 column names → ``setweight`` class, per FTS table (for ``column : term`` filters).
FTS_COLUMNS = {"nodes_fts": {"label": "A", "terms": "B", "content": "C"},
               "episodes_fts": {"text": "A", "role": "B", "context": "C", "date": "D"}}


def fts5_to_tsquery(expr: str, table: str | None = None) -> str:
    """The ``to_tsquery`` text of an FTS5 expression.

    Understood: quoted strings (a phrase of several words → ``<->``), bare words, a
    trailing ``*`` (prefix → ``:*``), ``OR``/``AND``/``NOT`` and parentheses, and a column
    filter ``col : term`` (the column's weight class of ``table``, :data:`FTS_COLUMNS`);
    adjacent terms are ANDed, as in FTS5. Words are reduced to letters and digits (FTS5's
    unicode61 tokenizer splits on everything else), so nothing in the text can be
    tsquery syntax. An expression with no word gives ``''`` (matches nothing).
    """
    out: list[str] = []
    need_op = False
    weight = ""
    depth = 0
    for m in _FTS_TOKEN.finditer(expr or ""):
        column, quoted, qstar, op, word, wstar, paren = m.groups()
        if column:
            weight = FTS_COLUMNS.get(table or "", {}).get(column.lower(), "")
            continue
        if op:
            if op == "NOT":
                out.append("& !" if need_op else "!")
            elif need_op:
                out.append("|" if op == "OR" else "&")
            need_op = False
            continue
        if paren:
            if paren == "(":
                if need_op:
                    out.append("&")
                out.append("(")
                depth += 1
                need_op = False
            elif depth > 0:  # an unbalanced ')' is dropped
                while out and out[-1] in ("|", "&", "& !", "!"):
                    out.pop()
                if out and out[-1] == "(":  # an empty group goes
                    out.pop()
                    if out and out[-1] == "&":
                        out.pop()
                else:
                    out.append(")")
                    need_op = True
                depth -= 1
            continue
        text = quoted.replace('""', '"') if quoted is not None else word
        star = qstar if quoted is not None else wstar
        words = re.findall(r"[^\W_]+", text)
        if not words:
            continue
        suffix = (":*" + weight if star else ":" + weight) if (star or weight) else ""
        term = " <-> ".join(w + suffix for w in words)
        weight = ""
        if len(words) > 1:
            term = f"({term})"
        if need_op:
            out.append("&")
        out.append(term)
        need_op = True
    while out and out[-1] in ("|", "&", "& !", "!", "("):
        if out.pop() == "(":
            depth -= 1
    out += [")"] * depth
    return " ".join(out)
