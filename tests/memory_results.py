"""Reading a ``@memory-query`` result text the way a model does: numbered result blocks.

Used by the host end-to-end tests to check that the top results are evidence, not
echoes of earlier memory queries or bare tool names.
"""

from __future__ import annotations

import re

#: What the text of an earlier memory command's result starts with (a query's header, a
#: history answer's header, add-node's confirmation).
ECHO = re.compile(r"(?:^|\s)(?:similarity|history|pattern|traversal) '[^']*': \d+ (?:results?|chains?)|\badded n\d+ \(")
#: An excerpt that is nothing but a tool's name (``opensage_memory-add-node``, ``mcp__x__y``, ``Bash``).
STUB = re.compile(r"^\s*(?:mcp__[\w-]+|opensage_[\w-]+|[\w-]*memory-[\w-]+|bash|read|edit|write|task|Bash|Read|Edit|Write)\s*$")


def result_blocks(text: str, n: int = 5) -> list[str]:
    """The first ``n`` numbered results, each with its indented lines."""
    blocks: list[list[str]] = []
    for line in text.splitlines():
        if re.match(r"^\d+\. ", line):
            blocks.append([line])
        elif blocks and line.startswith(" "):
            blocks[-1].append(line)
    return ["\n".join(b) for b in blocks[:n]]


def echoes_and_stubs(text: str, n: int = 5) -> list[str]:
    """Top-``n`` result blocks that are an earlier memory command's result, or whose
    excerpt is a bare tool name."""
    bad = []
    for block in result_blocks(text, n):
        lines = block.splitlines()
        excerpt = lines[1] if len(lines) > 1 else ""
        if ECHO.search(block) or STUB.match(excerpt) or STUB.match(re.sub(r"^\d+\. \S+ ", "", lines[0]).split(" (")[0]):
            bad.append(block)
    return bad
