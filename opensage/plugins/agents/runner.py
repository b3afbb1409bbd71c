"""The standalone agent runner: a tool-calling loop through :mod:`opensage.llm`.

In a host (OpenCode, Claude Code) the host runs generated agents. Standalone
(``opensage run``, ``@vertical-decompose``, ``@horizontal-ensemble``) this module runs
them: the agent's prompt and the task go to the model, every tool call it makes is
executed and its result fed back, until it answers without a tool call or a budget
runs out.

Built-in tools (names as in :data:`opensage.types.BUILTIN_TOOLS`):

* ``read``, ``write``, ``edit``, ``list``, ``search`` — files under the agent's root
  only: absolute paths outside it and ``..`` escapes are refused, protected paths
  (:mod:`opensage.protected`: ``.git``, ``.claude``, ``opencode.json``, ``.envrc``...)
  are read-only;
* ``shell`` — one command line run by :func:`opensage.sandbox.run` with the agent's root
  as the only writable directory and no network;
* ``memory_query``, ``memory_add`` — the workspace's graph memory, contributed by the
  graph-memory plugin through ``register_tools`` (absent when that plugin is blocked);

plus every other tool registered by plugins (``register_tools``: generated tools).

Which tools an agent gets comes from :attr:`AgentSpec.tools` (``allow``/``ask``/``deny``;
a tool not listed is denied). ``ask`` has nobody to ask standalone, so it follows
``ask_policy`` (``deny`` by default; ``opensage run`` allows it because every write is
confined to a scratch copy and the shell is sandboxed).

An agent that cannot finish says so by starting its final answer with ``FAILED:``; an
empty final answer is a failure too. Tool calls whose arguments are not a JSON object
(``null``, an array, broken JSON) are answered with a tool error and the loop goes on.
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import hashlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from opensage.errors import ModelError, OpenSageError
from opensage.ignore import DEFAULT_IGNORED_DIRS, walk as walk_project
from opensage.types import BUILTIN_TOOLS, AgentResult, AgentSpec, CommandContext, SessionEvent, Tool

if TYPE_CHECKING:
    from opensage.host import Host, Session

__all__ = ["AgentRunner", "Budget", "ToolError", "run_agent", "tree_snapshot", "IGNORED_DIRS", "FAILED_PREFIX"]

#: Directories never walked, listed, searched, copied or diffed whatever .gitignore says
#: (the one list lives in :mod:`opensage.ignore`, which also reads the project's .gitignore).
IGNORED_DIRS = DEFAULT_IGNORED_DIRS
#: An agent's final answer starting with this marks the run as failed (the rest says why).
FAILED_PREFIX = "FAILED:"
#: Tool output fed back to the model is cut to this many characters.
MAX_TOOL_OUTPUT = 16_000
#: An agent's final answer is cut to this many characters.
MAX_ANSWER_CHARS = 50_000
MAX_READ_BYTES = 400_000
MAX_SEARCH_HITS = 200
MAX_LIST_ENTRIES = 500


class ToolError(OpenSageError):
    """A tool call that could not be done; the message goes back to the model."""


@dataclass
class Budget:
    """Limits of one agent run.

    :param steps: most model calls (each may carry several tool calls); None = the
        agent spec's ``steps``.
    :param max_tokens: most prompt + completion tokens over the run.
    :param max_cost_usd: most spend in USD (from litellm's price map).
    :param shell_timeout_s: wall-clock limit of one ``shell`` call, in seconds.
    """

    steps: int | None = None
    max_tokens: int = 400_000
    max_cost_usd: float = 2.0
    shell_timeout_s: float = 120.0


def tree_snapshot(root: Path) -> dict[str, str]:
    """``{relative posix path: sha256}`` of every regular file under ``root`` that
    :func:`opensage.ignore.walk` keeps (not in :data:`IGNORED_DIRS`, not matched by the
    project's ``.gitignore``)."""
    out: dict[str, str] = {}
    root = Path(root)
    for dirpath, dirnames, filenames in walk_project(root):
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            try:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                continue
            out[path.relative_to(root).as_posix()] = digest
    return out


def _tool_defs() -> dict[str, dict[str, Any]]:
    """JSON Schemas of the built-in tools (OpenAI function format, without the wrapper)."""
    s = lambda props, req: {"type": "object", "properties": props, "required": req}  # noqa: E731
    return {
        "read": {
            "description": "Read a text file under the working directory. Returns numbered lines.",
            "parameters": s({
                "path": {"type": "string", "description": "path relative to the working directory"},
                "offset": {"type": "integer", "description": "first line (1-based)", "minimum": 1},
                "limit": {"type": "integer", "description": "number of lines", "minimum": 1},
            }, ["path"]),
        },
        "write": {
            "description": "Create or overwrite a file with the given content (parent folders are created).",
            "parameters": s({
                "path": {"type": "string"}, "content": {"type": "string"},
            }, ["path", "content"]),
        },
        "edit": {
            "description": "Replace an exact piece of text in a file. old_string must occur exactly once "
                           "unless replace_all is true.",
            "parameters": s({
                "path": {"type": "string"},
                "old_string": {"type": "string", "description": "exact text to replace (with indentation)"},
                "new_string": {"type": "string"},
                "replace_all": {"type": "boolean", "default": False},
            }, ["path", "old_string", "new_string"]),
        },
        "list": {
            "description": "List files under a folder (recursive), optionally filtered by a glob such as '*.py'.",
            "parameters": s({
                "path": {"type": "string", "default": "."},
                "glob": {"type": "string", "description": "fnmatch pattern on the file name"},
            }, []),
        },
        "search": {
            "description": "Search file contents with a regular expression; returns path:line: text.",
            "parameters": s({
                "pattern": {"type": "string", "description": "Python regular expression"},
                "path": {"type": "string", "default": "."},
                "glob": {"type": "string", "description": "only files whose name matches, e.g. '*.py'"},
            }, ["pattern"]),
        },
        "shell": {
            "description": "Run one shell command line (bash) in a sandbox: the working directory is "
                           "the only writable place and there is no network. Returns exit code, stdout, stderr.",
            "parameters": s({
                "command": {"type": "string", "description": "e.g. 'python -m pytest -q'"},
                "timeout_s": {"type": "number", "description": "wall-clock limit in seconds", "minimum": 1},
            }, ["command"]),
        },
    }


#: The loop's own tools (confined to the agent's root); ``memory_*`` come from ``register_tools``.
BUILTIN_DEFS = _tool_defs()


@dataclass
class _Usage:
    tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0


@dataclass
class AgentRunner:
    """Run one :class:`AgentSpec` on a task, confined to ``root``.

    :param host: the host (graph memory, generated tools, session recording).
    :param spec: the agent to run (prompt, tool permissions, model, temperature, steps).
    :param root: the agent's working directory (a scratch copy for topologies); default
        the workspace root.
    :param session: host session to record tool calls in (optional).
    :param budget: step/token/cost limits (see :class:`Budget`).
    :param model: litellm model string overriding ``spec.model`` and ``$OPENSAGE_MODEL``.
    :param ask_policy: what ``ask`` permissions become standalone: ``deny`` or ``allow``.
    :param on_event: ``on_event(dict)`` progress callback: ``{"kind": "step"|"tool"|"done", ...}``.
    """

    host: "Host"
    spec: AgentSpec
    root: Path | None = None
    session: "Session | None" = None
    budget: Budget = field(default_factory=Budget)
    model: str | None = None
    ask_policy: Literal["allow", "deny"] = "deny"
    on_event: Callable[[dict], None] | None = None

    def __post_init__(self) -> None:
        self.root = Path(self.root or self.host.workspace.root).resolve()
        self._changed: set[str] = set()
        self._extra: dict[str, Tool] = {}

    # -- permissions -------------------------------------------------------------------
    def allowed_tools(self) -> list[str]:
        """Names of the tools this agent may call (built-in first, then generated), per its spec."""
        granted = {"allow"} | ({"ask"} if self.ask_policy == "allow" else set())
        names = [n for n in BUILTIN_DEFS if self.spec.tools.get(n) in granted]
        self._extra = {}
        registered = self.host.tools(self.session)
        # built-in names registered by plugins (graph memory's memory_*): granted by name only
        for name in BUILTIN_TOOLS:
            if name not in BUILTIN_DEFS and name in registered and self.spec.tools.get(name) in granted:
                self._extra[name] = registered[name]
                names.append(name)
        for name, tool in registered.items():
            if name in BUILTIN_TOOLS:
                continue
            if self.spec.tools.get(name) in granted or self.spec.tools.get("*") in granted:
                self._extra[name] = tool
                names.append(name)
        return names

    def _definitions(self, names: list[str]) -> list[dict]:
        defs = []
        for name in names:
            if name in BUILTIN_DEFS:
                d = BUILTIN_DEFS[name]
            else:
                tool = self._extra[name]
                d = {"description": tool.description, "parameters": tool.parameters or {"type": "object"}}
            defs.append({"type": "function", "function": {"name": name, **d}})
        return defs

    # -- the loop ----------------------------------------------------------------------
    def _system_prompt(self, names: list[str]) -> str:
        return (
            f"{self.spec.prompt.strip()}\n\n"
            f"You work in the directory {self.root} (paths are relative to it). "
            f"Your tools: {', '.join(names) or 'none'}. Call tools to inspect and change files; "
            "verify your work (e.g. run the tests with the shell tool) when you can. When you are done, "
            "answer without a tool call: say what you did and which files you changed. "
            f"If you cannot complete the task, start your final answer with '{FAILED_PREFIX}' and say why."
        )

    def _emit(self, **event: Any) -> None:
        if self.on_event is not None:
            try:
                self.on_event({"agent": self.spec.name, **event})
            except Exception:  # a broken progress display must not stop the agent
                pass

    def run(self, task: str, context: str = "") -> AgentResult:
        """Synchronous :meth:`arun` (do not call from a running event loop)."""
        return asyncio.run(self.arun(task, context))

    async def arun(self, task: str, context: str = "") -> AgentResult:
        """Run the agent on ``task`` until it answers, fails, or exhausts a budget.

        :param task: what to do (the user message).
        :param context: what earlier agents produced (prepended to the task).
        :returns: :class:`AgentResult`; ``success`` is False when the step, token or cost
            budget ran out, the model failed (after llm's retries), the final answer was empty,
            or the agent answered ``FAILED: ...`` — ``error`` says which.
        :raises ModelNotConfigured: no model is configured.
        """
        from opensage import llm  # lazy: importing litellm costs ~2 s

        started = time.perf_counter()
        names = self.allowed_tools()
        tools = self._definitions(names) or None
        before = await asyncio.to_thread(tree_snapshot, self.root)
        user = f"Context from earlier steps:\n{context.strip()}\n\nYour task:\n{task}" if context.strip() else task
        messages: list[dict] = [
            {"role": "system", "content": self._system_prompt(names)},
            {"role": "user", "content": user},
        ]
        max_steps = self.budget.steps or self.spec.steps
        await asyncio.to_thread(self._record, SessionEvent(kind="user_message", text=task, role="coordinator",
                                                           meta={"agent": self.spec.name}))
        usage = _Usage()
        output, error, success = "", None, False
        model = self.model or self.spec.model
        for step in range(1, max_steps + 1):
            self._emit(kind="step", step=step, max_steps=max_steps, tokens=usage.tokens, cost_usd=usage.cost_usd)
            try:
                completion = await llm.acomplete(messages, model=model, tools=tools, temperature=self.spec.temperature,
                                                 on_retry=lambda info, _s=step: self._emit(**info, step=_s))
            except ModelError as exc:
                error = f"model error at step {step}: {exc}"
                break
            usage.calls += 1
            usage.tokens += completion.usage.total_tokens
            usage.cost_usd += completion.usage.cost_usd
            messages.append(completion.as_message())
            if not completion.tool_calls:
                output = _bounded_answer(completion.content or "")
                if not output.strip():
                    error = (f"the model's final answer was empty at step {step} (no text and no tool call); "
                             "an agent must say what it did, so the run counts as failed")
                elif output.lstrip().upper().startswith(FAILED_PREFIX):
                    error = output.strip()[len(FAILED_PREFIX):].strip() or "the agent reported failure"
                else:
                    success = True
                break
            for call in completion.tool_calls:
                self._emit(kind="tool", step=step, tool=call.name, arguments=call.arguments)
                text = await self._call_tool(call.name, call.arguments, names, call.error)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": text})
            if usage.tokens > self.budget.max_tokens:
                error = f"token budget exhausted: {usage.tokens} tokens > {self.budget.max_tokens}"
                break
            if usage.cost_usd > self.budget.max_cost_usd:
                error = f"cost budget exhausted: ${usage.cost_usd:.4f} > ${self.budget.max_cost_usd:.4f}"
                break
        else:
            error = f"step budget exhausted: {max_steps} model calls without a final answer"
        if output or error:
            await asyncio.to_thread(self._record, SessionEvent(
                kind="assistant_message" if success else "error", text=output or error or "",
                role=self.spec.name, meta={"success": success}))
        after = await asyncio.to_thread(tree_snapshot, self.root)
        changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
        changed |= {p for p in self._changed if before.get(p) != after.get(p)}
        result = AgentResult(
            agent=self.spec.name, task=task, output=output, success=success,
            files_changed=sorted(changed), tokens=usage.tokens, cost_usd=usage.cost_usd,
            latency_ms=(time.perf_counter() - started) * 1000, steps=usage.calls, error=error,
        )
        self._emit(kind="done", success=success, tokens=usage.tokens, cost_usd=usage.cost_usd, error=error)
        return result

    # -- tools -------------------------------------------------------------------------
    async def _call_tool(self, name: str, arguments: dict, allowed: list[str], problem: str | None = None) -> str:
        """Run one tool call; every failure becomes an ``error: ...`` text for the model.

        :param problem: why the call's arguments are unusable (:attr:`ToolCall.error`);
            the tool is not run then.
        """
        if name not in allowed:
            return (f"error: tool {name!r} is not available to this agent; "
                    f"available: {', '.join(allowed) or 'none'}.")
        if problem or not isinstance(arguments, dict):
            return (f"error: {name} was not run: {problem or 'the arguments must be a JSON object'}. "
                    "Call it again with a JSON object of its parameters, e.g. {\"path\": \"README.md\"}.")
        await asyncio.to_thread(self._record, SessionEvent(kind="tool_call", tool=name, args=arguments,
                                                           role=self.spec.name))
        if name in BUILTIN_TOOLS:
            if name in BUILTIN_DEFS:
                call = functools.partial(getattr(self, f"_tool_{name}"), **arguments)
            else:
                call = functools.partial(self._extra[name].run, arguments, self._context())
            try:
                text = await asyncio.to_thread(call)
            except TypeError as exc:
                text = f"error: bad arguments for {name}: {exc}"
            except (OpenSageError, OSError, ValueError, re.error) as exc:
                text = f"error: {exc}"
            except Exception as exc:  # model-made input must never crash the run: report it to the model
                text = f"error: {name} failed: {type(exc).__name__}: {str(exc)[:300]}"
        else:
            try:
                text = await asyncio.to_thread(self._extra[name].run, arguments, self._context())
            except Exception as exc:  # plugin code: any failure is reported to the model, not raised
                text = f"error: tool {name} failed: {type(exc).__name__}: {exc}"
        text = str(text)
        if len(text) > MAX_TOOL_OUTPUT:
            text = text[:MAX_TOOL_OUTPUT] + f"\n[... cut: {len(text) - MAX_TOOL_OUTPUT} more characters]"
        await asyncio.to_thread(self._record, SessionEvent(kind="tool_result", tool=name, text=text[:4000],
                                                           role=self.spec.name))
        return text

    def _context(self) -> CommandContext:
        """What a registered tool sees: the host, the session and this agent's name."""
        return CommandContext(host=self.host, session=self.session, agent=self.spec.name)

    def _record(self, event: SessionEvent) -> None:
        """Record a tool call/result as an episode of the session (runs in a worker thread)."""
        if self.session is not None:
            self.host.record(self.session, event)

    def _path(self, path: str, *, write: bool = False) -> Path:
        if not isinstance(path, str) or not path.strip():
            raise ToolError("path must be a non-empty string relative to the working directory")
        candidate = Path(path)
        full = (candidate if candidate.is_absolute() else self.root / candidate).resolve()
        if full != self.root and self.root not in full.parents:
            raise ToolError(f"path {path!r} is outside the working directory; use a path relative to it")
        rel = full.relative_to(self.root)
        if write and rel.parts:
            from opensage.protected import match

            pattern = match(rel.as_posix())
            if pattern is not None:
                raise ToolError(f"path {path!r} is protected ({pattern}) and read-only for agents: the host runs "
                                "or reads it (see docs/sandbox.md, protected paths)")
        return full

    def _rel(self, full: Path) -> str:
        return full.relative_to(self.root).as_posix()

    def _tool_read(self, path: str, offset: int = 1, limit: int | None = None) -> str:
        full = self._path(path)
        if not full.is_file():
            raise ToolError(f"{path!r} is not a file")
        data = full.read_bytes()[:MAX_READ_BYTES]
        lines = data.decode("utf-8", errors="replace").splitlines()
        start = max(1, int(offset)) - 1
        end = len(lines) if limit is None else start + int(limit)
        body = "\n".join(f"{i + 1:5}\t{line}" for i, line in enumerate(lines[start:end], start))
        return body if body else "(empty file)"

    def _tool_write(self, path: str, content: str) -> str:
        full = self._path(path, write=True)
        if full.is_dir():
            raise ToolError(f"{path!r} is a directory")
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_text(content, encoding="utf-8")
        self._changed.add(self._rel(full))
        return f"wrote {self._rel(full)} ({len(content.encode('utf-8'))} bytes)"

    def _tool_edit(self, path: str, old_string: str, new_string: str, replace_all: bool = False) -> str:
        full = self._path(path, write=True)
        if not full.is_file():
            raise ToolError(f"{path!r} does not exist; create it with the write tool")
        text = full.read_text(encoding="utf-8")
        count = text.count(old_string) if old_string else 0
        if count == 0:
            raise ToolError(f"old_string not found in {path}; read the file and copy the exact text")
        if count > 1 and not replace_all:
            raise ToolError(f"old_string occurs {count} times in {path}; add context to make it unique "
                            "or pass replace_all=true")
        text = text.replace(old_string, new_string) if replace_all else text.replace(old_string, new_string, 1)
        full.write_text(text, encoding="utf-8")
        self._changed.add(self._rel(full))
        return f"edited {self._rel(full)} ({count if replace_all else 1} replacement(s))"

    def _walk(self, base: Path, glob: str | None):
        for dirpath, dirnames, filenames in walk_project(base, top=self.root):
            for name in filenames:
                if glob and not fnmatch.fnmatch(name, glob):
                    continue
                yield Path(dirpath) / name

    def _tool_list(self, path: str = ".", glob: str | None = None) -> str:
        base = self._path(path)
        if base.is_file():
            return self._rel(base)
        if not base.is_dir():
            raise ToolError(f"{path!r} does not exist")
        entries = []
        for i, full in enumerate(self._walk(base, glob)):
            if i >= MAX_LIST_ENTRIES:
                entries.append(f"[... more than {MAX_LIST_ENTRIES} files; narrow with path= or glob=]")
                break
            entries.append(self._rel(full))
        return "\n".join(entries) if entries else "(no files)"

    def _tool_search(self, pattern: str, path: str = ".", glob: str | None = None) -> str:
        regex = re.compile(pattern)
        base = self._path(path)
        files = [base] if base.is_file() else list(self._walk(base, glob))
        hits = []
        for full in files:
            try:
                text = full.read_bytes()[:MAX_READ_BYTES].decode("utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            for n, line in enumerate(text.splitlines(), 1):
                if regex.search(line):
                    hits.append(f"{self._rel(full)}:{n}: {line.strip()[:200]}")
                    if len(hits) >= MAX_SEARCH_HITS:
                        return "\n".join(hits) + f"\n[... stopped at {MAX_SEARCH_HITS} matches]"
        return "\n".join(hits) if hits else "(no matches)"

    def _tool_shell(self, command: str, timeout_s: float | None = None) -> str:
        if not isinstance(command, str) or not command.strip():
            raise ToolError("command must be a non-empty string")
        limit = min(float(timeout_s or self.budget.shell_timeout_s), self.budget.shell_timeout_s)
        result = run_shell(command, self.root, timeout_s=limit, config_root=self.host.workspace.root)
        parts = [f"exit code: {result.returncode}" + (" (timed out)" if result.timed_out else "")]
        if result.stdout:
            parts.append(f"stdout:\n{result.stdout}")
        if result.stderr:
            parts.append(f"stderr:\n{result.stderr}")
        return "\n".join(parts)


def _bounded_answer(text: str) -> str:
    """A final answer cut to :data:`MAX_ANSWER_CHARS` (it is stored in the registry, graph and reports)."""
    if len(text) <= MAX_ANSWER_CHARS:
        return text
    return text[:MAX_ANSWER_CHARS] + f"\n[... answer cut: {len(text) - MAX_ANSWER_CHARS} more characters]"


def run_shell(command: str, root: Path, timeout_s: float = 120.0, config_root: Path | None = None):
    """Run ``bash -c command`` in :mod:`opensage.sandbox` with ``root`` as cwd and only writable path.

    :param timeout_s: wall-clock limit in seconds (also the CPU-seconds limit).
    :param config_root: project whose ``.opencode/opensage.yaml`` configures the sandbox
        (default: ``root``).
    :returns: the sandbox's ``SandboxResult`` (returncode, stdout, stderr, timed_out, ...).
    :raises SandboxError: no allowed isolation level on this machine.
    """
    from opensage import sandbox

    limits = sandbox.Limits(wall_s=float(timeout_s), cpu_s=max(10, int(timeout_s)))
    return sandbox.run(["bash", "-c", command], cwd=Path(root), writable=[Path(root)], limits=limits,
                       network=False, config=Path(config_root or root))


async def run_agent(host: "Host", spec: AgentSpec, task: str, **kwargs: Any) -> AgentResult:
    """Shortcut: ``await AgentRunner(host, spec, **kwargs).arun(task)``."""
    context = kwargs.pop("context", "")
    return await AgentRunner(host, spec, **kwargs).arun(task, context)
