"""Generated agents on disk, in each host's own agent format.

Layout (under the project):

* ``.opencode/agent/<name>.md`` — the current version, as OpenCode 1.18 loads it:
  YAML frontmatter with ``description``, ``mode``, ``model`` (only when set, as
  ``provider/model``), ``temperature`` (only when set), ``steps`` and ``permission``;
  the body is the prompt. No other key is written: OpenCode passes unknown
  frontmatter keys to the provider as model options.
* ``.claude/agents/<name>.md`` — the same agent for Claude Code (``name``,
  ``description``, ``tools``, ``model``, ``maxTurns``), when asked for.
* ``.opencode/opensage-agents/<name>.json`` — our sidecar: the full
  :class:`~opensage.types.AgentSpec` (task, specialization, version, our tool
  names), so nothing of ours leaks into the host's file.
* ``.opencode/opensage-agents/<name>.v<N>.md`` / ``.v<N>.json`` / ``.v<N>.claude.md``
  — earlier versions. Generating an agent whose name exists writes version N+1 as
  the current file (the host loads the newest) and moves version N here, outside
  OpenCode's ``agent/**/*.md`` glob so OpenCode never loads two copies. Nothing is
  ever overwritten without its previous content being kept.

Every file is written atomically (temp file + ``os.replace``) under a file lock on
the sidecar folder, so two processes generating the same name get versions N+1 and
N+2, never a lost update.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opensage.errors import NotFoundError, UsageError
from opensage.store import Workspace, atomic_write_text, check_name
from opensage.types import AgentSpec

__all__ = [
    "MCP_SERVER",
    "OPENCODE_PERMISSION_KEYS",
    "CLAUDE_TOOL_NAMES",
    "WrittenAgent",
    "meta_dir",
    "opencode_path",
    "claude_path",
    "sidecar_path",
    "render_opencode",
    "render_claude",
    "parse_opencode",
    "write_agent",
    "load_agent",
    "list_agents",
    "agent_versions",
    "is_generated",
    "free_name",
]

#: Our MCP server's name in the hosts (``opensage.mcp_server``): OpenCode names its tools
#: ``opensage_<tool>``, Claude Code ``mcp__opensage__<tool>``.
MCP_SERVER = "opensage"

#: Our tool names -> OpenCode 1.18 permission keys. OpenCode's ``edit`` covers write,
#: edit and patch; ``glob``/``grep`` are its file-listing and search tools; memory tools
#: are our MCP commands. Any other tool name (a generated tool) maps to
#: ``opensage_<name>``, the name OpenCode gives our MCP server's tool.
OPENCODE_PERMISSION_KEYS: dict[str, tuple[str, ...]] = {
    "read": ("read",),
    "write": ("edit",),
    "edit": ("edit",),
    "list": ("glob",),
    "search": ("grep", "glob"),
    "shell": ("bash",),
    "webfetch": ("webfetch",),
    "memory_query": (f"{MCP_SERVER}_memory-query",),
    "memory_add": (f"{MCP_SERVER}_memory-add-node", f"{MCP_SERVER}_memory-add-edge"),
}

#: Our tool names -> Claude Code tool names (its ``tools:`` list).
CLAUDE_TOOL_NAMES: dict[str, tuple[str, ...]] = {
    "read": ("Read",),
    "write": ("Write",),
    "edit": ("Edit",),
    "list": ("Glob",),
    "search": ("Grep", "Glob"),
    "shell": ("Bash",),
    "webfetch": ("WebFetch",),
    "memory_query": (f"mcp__{MCP_SERVER}__memory-query",),
    "memory_add": (f"mcp__{MCP_SERVER}__memory-add-node", f"mcp__{MCP_SERVER}__memory-add-edge"),
}

_RANK = {"deny": 0, "ask": 1, "allow": 2}
_VERSION_FILE = re.compile(r"^(?P<name>.+)\.v(?P<v>\d+)\.json$")


@dataclass
class WrittenAgent:
    """What :func:`write_agent` wrote: the stored spec and every path (absolute)."""

    spec: AgentSpec
    opencode: Path
    sidecar: Path
    claude: Path | None = None
    archived: list[Path] = field(default_factory=list)

    def as_dict(self, root: Path | None = None) -> dict[str, Any]:
        """The written agent as JSON: the spec, and every path (relative to ``root`` when given
        and inside it, else absolute).
        """
        def rel(p: Path | None) -> str | None:
            if p is None:
                return None
            try:
                return str(p.relative_to(root)) if root else str(p)
            except ValueError:
                return str(p)

        return {
            "spec": self.spec.model_dump(),
            "opencode": rel(self.opencode),
            "claude": rel(self.claude),
            "sidecar": rel(self.sidecar),
            "archived": [rel(p) for p in self.archived],
        }


# -- paths -----------------------------------------------------------------------------------
def meta_dir(ws: Workspace) -> Path:
    """``.opencode/opensage-agents/``: sidecars and earlier versions (not an OpenCode agent folder)."""
    return ws.state_dir / "opensage-agents"


def opencode_path(ws: Workspace, name: str) -> Path:
    """``.opencode/agent/<name>.md``, the agent file OpenCode reads.

    :raises UsageError: ``name`` is not a safe name.
    """
    return ws.agents_dir / f"{check_name(name, 'agent name')}.md"


def claude_path(ws: Workspace, name: str) -> Path:
    """``.claude/agents/<name>.md``, the agent file Claude Code reads.

    :raises UsageError: ``name`` is not a safe name.
    """
    return ws.root / ".claude" / "agents" / f"{check_name(name, 'agent name')}.md"


def sidecar_path(ws: Workspace, name: str) -> Path:
    """``.opencode/opensage-agents/<name>.json``, the agent's full spec (the sidecar).

    :raises UsageError: ``name`` is not a safe name.
    """
    return meta_dir(ws) / f"{check_name(name, 'agent name')}.json"


def _version_paths(ws: Workspace, name: str, version: int) -> tuple[Path, Path, Path]:
    base = meta_dir(ws) / f"{name}.v{version}"
    return Path(f"{base}.md"), Path(f"{base}.json"), Path(f"{base}.claude.md")


# -- rendering -------------------------------------------------------------------------------
def _dump_frontmatter(data: dict[str, Any], body: str) -> str:
    import yaml

    head = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False, width=10_000)
    return f"---\n{head}---\n{body.rstrip()}\n"


def opencode_permission(spec: AgentSpec) -> dict[str, str]:
    """The OpenCode ``permission`` map for ``spec.tools``.

    ``"*": "deny"`` comes first (OpenCode applies rules in order, the last match
    wins), so tools the spec does not list stay denied, as they are when we run the
    agent ourselves. Where several of our tools share one OpenCode key (``write`` and
    ``edit`` are both ``edit``), the most permissive of them is used: the agent was
    granted that capability and OpenCode cannot grant half of it.
    """
    perms: dict[str, str] = {"*": "deny"}
    for tool, level in spec.tools.items():
        for key in OPENCODE_PERMISSION_KEYS.get(tool, (f"{MCP_SERVER}_{tool}",)):
            if key not in perms or key == "*" or _RANK[level] > _RANK[perms[key]]:
                perms[key] = level
    return perms


def render_opencode(spec: AgentSpec) -> str:
    """The OpenCode agent file for ``spec`` (frontmatter + prompt)."""
    front: dict[str, Any] = {"description": spec.description, "mode": spec.mode}
    if spec.model and "/" in spec.model:
        front["model"] = spec.model
    if spec.temperature is not None:
        front["temperature"] = spec.temperature
    front["steps"] = spec.steps
    front["permission"] = opencode_permission(spec)
    return _dump_frontmatter(front, spec.prompt)


def claude_tools(spec: AgentSpec) -> list[str]:
    """Claude Code tool names the agent may use (``allow`` and ``ask``; Claude has no per-agent ask)."""
    out: list[str] = []
    for tool, level in spec.tools.items():
        if level == "deny":
            continue
        for name in CLAUDE_TOOL_NAMES.get(tool, (f"mcp__{MCP_SERVER}__{tool}",)):
            if name not in out:
                out.append(name)
    return out


def render_claude(spec: AgentSpec) -> str:
    """The Claude Code subagent file for ``spec``.

    ``model`` is written only for ``anthropic/<id>`` models (as ``<id>``); otherwise the
    agent inherits the session's model. With no tool allowed, every known tool is listed
    in ``disallowedTools`` (an absent ``tools`` list would mean "all tools").
    """
    front: dict[str, Any] = {"name": spec.name, "description": spec.description}
    tools = claude_tools(spec)
    if tools:
        front["tools"] = ", ".join(tools)
    else:
        every = []
        for names in CLAUDE_TOOL_NAMES.values():
            every.extend(n for n in names if n not in every)
        front["disallowedTools"] = ", ".join(every)
    if spec.model and spec.model.startswith("anthropic/"):
        front["model"] = spec.model.split("/", 1)[1]
    front["maxTurns"] = spec.steps
    return _dump_frontmatter(front, spec.prompt)


def _split_frontmatter(text: str, path: Path) -> tuple[dict[str, Any], str]:
    import yaml

    if not text.startswith("---"):
        return {}, text
    parts = text.split("\n---", 1)
    if len(parts) != 2:
        raise UsageError(f"{path}: frontmatter starts with '---' but has no closing '---' line.")
    try:
        front = yaml.safe_load(parts[0][3:]) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: invalid YAML frontmatter: {exc}") from None
    if not isinstance(front, dict):
        raise UsageError(f"{path}: frontmatter must be a mapping of keys to values.")
    rest = parts[1].split("\n", 1)  # the remainder of the closing '---' line, then the body
    return front, rest[1] if len(rest) == 2 else ""


def parse_opencode(text: str, name: str, path: Path | None = None) -> AgentSpec:
    """An :class:`AgentSpec` from an OpenCode agent file (for agents not generated by us).

    Permissions map back to our tool names where a key is known (``bash`` -> ``shell``,
    ``edit`` -> ``write`` and ``edit``, ...); a ``"*"`` rule applies to every built-in tool
    not named. Raises UsageError for malformed frontmatter.
    """
    from pydantic import ValidationError

    where = path or Path(f"{name}.md")
    front, body = _split_frontmatter(text, where)
    perm = front.get("permission") or {}
    tools: dict[str, str] = {}
    if isinstance(perm, str):
        perm = {"*": perm}
    if isinstance(perm, dict):
        default = perm.get("*") if isinstance(perm.get("*"), str) else None
        for ours, keys in OPENCODE_PERMISSION_KEYS.items():
            levels = [perm[k] for k in keys if isinstance(perm.get(k), str)]
            if levels:
                tools[ours] = max(levels, key=lambda lv: _RANK.get(lv, 0))
            elif default in _RANK:
                tools[ours] = default
    else:
        tools = {}
    tools = {k: v for k, v in tools.items() if v in _RANK}
    model = front.get("model")
    try:
        return AgentSpec(
            name=name,
            description=str(front.get("description") or f"{name} (hand-written agent)"),
            mode=front.get("mode") or "all",
            prompt=body.strip() or f"You are the {name} agent.",
            tools=tools or {"read": "allow", "list": "allow", "search": "allow"},
            model=str(model) if model else None,
            temperature=front.get("temperature"),
            steps=int(front.get("steps") or front.get("maxSteps") or 20),
        )
    except (ValidationError, TypeError, ValueError) as exc:
        raise UsageError(f"{where}: not a valid agent file: {exc}") from None


# -- writing ---------------------------------------------------------------------------------
def _lock(ws: Workspace):
    from filelock import FileLock

    meta_dir(ws).mkdir(parents=True, exist_ok=True)
    return FileLock(str(meta_dir(ws) / ".lock"), timeout=60)


def is_generated(ws: Workspace, name: str) -> bool:
    """True when ``name`` has our sidecar (we generated it)."""
    return sidecar_path(ws, name).exists()


def free_name(ws: Workspace, name: str) -> str:
    """``name`` if it is free or ours (a new version), else the first free ``name-2``, ``name-3``...

    A hand-written agent (an OpenCode or Claude Code file without our sidecar) is never
    replaced by a generated one.
    """
    check_name(name, "agent name")
    candidate, n = name, 1
    while not is_generated(ws, candidate) and (opencode_path(ws, candidate).exists()
                                               or claude_path(ws, candidate).exists()):
        n += 1
        suffix = f"-{n}"
        candidate = f"{name[: 64 - len(suffix)].rstrip('-')}{suffix}"
    return candidate


def _latest_version(ws: Workspace, name: str) -> int:
    latest = 0
    current = sidecar_path(ws, name)
    if current.exists():
        latest = _read_sidecar(current).version
    for p in meta_dir(ws).glob(f"{name}.v*.json"):
        m = _VERSION_FILE.match(p.name)
        if m and m.group("name") == name:
            latest = max(latest, int(m.group("v")))
    return latest


def write_agent(ws: Workspace, spec: AgentSpec, claude: bool = False) -> WrittenAgent:
    """Write ``spec`` as the current version of its agent; keep the previous version.

    :param claude: also write ``.claude/agents/<name>.md``. If the previous version had a
        Claude Code file, it is rewritten too (so both hosts run the same version).
    :returns: the stored spec (``version`` set to previous + 1, or 1) and the paths.
    :raises UsageError: the name is unsafe, or a hand-written agent (no sidecar) already
        has it — pick another name (see :func:`free_name`); nothing is written.
    """
    name = check_name(spec.name, "agent name")
    oc_path, side_path, cl_path = opencode_path(ws, name), sidecar_path(ws, name), claude_path(ws, name)
    with _lock(ws):
        generated = side_path.exists()
        if not generated and (oc_path.exists() or cl_path.exists()):
            existing = oc_path if oc_path.exists() else cl_path
            raise UsageError(
                f"an agent named {name!r} already exists at {existing} and was not generated by opensage; "
                f"choose another name (e.g. {free_name(ws, name)!r})."
            )
        previous = _latest_version(ws, name) if generated else 0
        stored = spec.model_copy(update={"version": previous + 1})
        write_claude = claude or (generated and cl_path.exists())
        oc_text = render_opencode(stored)
        cl_text = render_claude(stored) if write_claude else None
        side_text = json.dumps({"generator": "opensage", "spec": stored.model_dump()}, indent=2,
                               ensure_ascii=False, sort_keys=True) + "\n"
        archived: list[Path] = []
        if generated:
            old_md, old_json, old_claude = _version_paths(ws, name, previous)
            for src, dst in ((oc_path, old_md), (cl_path, old_claude), (side_path, old_json)):
                if src.exists() and not dst.exists():
                    atomic_write_text(dst, src.read_text(encoding="utf-8"))
                    archived.append(dst)
        atomic_write_text(oc_path, oc_text)
        if cl_text is not None:
            atomic_write_text(cl_path, cl_text)
        atomic_write_text(side_path, side_text)
    return WrittenAgent(spec=stored, opencode=oc_path, sidecar=side_path,
                        claude=cl_path if cl_text is not None else None, archived=archived)


# -- reading ---------------------------------------------------------------------------------
def _read_sidecar(path: Path) -> AgentSpec:
    from pydantic import ValidationError

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return AgentSpec.model_validate(data["spec"])
    except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
        raise UsageError(f"{path}: unreadable agent record ({type(exc).__name__}: {exc}); "
                         "regenerate the agent or delete the file.") from None


def load_agent(ws: Workspace, name: str, version: int | None = None) -> AgentSpec:
    """The agent called ``name``: ours from its sidecar, a hand-written one from its OpenCode file.

    :param version: an earlier version (generated agents only); None = current.
    :raises NotFoundError: no such agent or version.
    """
    name = name.lstrip("@")
    check_name(name, "agent name")
    side = sidecar_path(ws, name)
    if version is not None:
        if side.exists() and _read_sidecar(side).version == version:
            return _read_sidecar(side)
        old = _version_paths(ws, name, version)[1]
        if old.exists():
            return _read_sidecar(old)
        raise NotFoundError(f"agent {name!r} has no version {version}; see @list-generated-agents.")
    if side.exists():
        return _read_sidecar(side)
    oc = opencode_path(ws, name)
    if oc.exists():
        return parse_opencode(oc.read_text(encoding="utf-8"), name, oc)
    raise NotFoundError(
        f"no agent named {name!r} in {ws.agents_dir}; run @list-generated-agents, or @generate-agent to make one."
    )


def list_agents(ws: Workspace) -> list[AgentSpec]:
    """Current versions of every generated agent, sorted by name."""
    folder = meta_dir(ws)
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.glob("*.json")):
        if _VERSION_FILE.match(p.name):
            continue
        out.append(_read_sidecar(p))
    return out


def agent_versions(ws: Workspace, name: str) -> list[AgentSpec]:
    """Every kept version of generated agent ``name``, oldest first (current last)."""
    check_name(name, "agent name")
    found: dict[int, AgentSpec] = {}
    for p in meta_dir(ws).glob(f"{name}.v*.json"):
        m = _VERSION_FILE.match(p.name)
        if m and m.group("name") == name:
            spec = _read_sidecar(p)
            found[spec.version] = spec
    side = sidecar_path(ws, name)
    if side.exists():
        spec = _read_sidecar(side)
        found[spec.version] = spec
    if not found:
        raise NotFoundError(f"no generated agent named {name!r}; see @list-generated-agents.")
    return [found[v] for v in sorted(found)]
