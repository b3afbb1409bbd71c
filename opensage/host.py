"""The host: plugin manager, command registry, tools and sessions.

This module is the only user of ``pm.hook``. Plugins never call each other directly:
they receive the host through :class:`~opensage.types.CommandContext` or
``session.host``.
"""

from __future__ import annotations

import functools
import json
import importlib
import inspect
import logging
import os
import sys
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import pluggy

from opensage import errors, hookspecs
from opensage.commands import bind_arguments, parse_line
from opensage.errors import NotFoundError, PluginError, UsageError
from opensage.pgschema import pg_sessions
from opensage.store import Database, Migration, Workspace, open_database
from opensage.types import Command, CommandContext, CommandResult, Route, SessionEvent, Tool

__all__ = ["Host", "Session", "DEFAULT_PLUGINS", "ENTRY_POINT_GROUP"]

log = logging.getLogger("opensage")

ENTRY_POINT_GROUP = "opensage"

#: The pack's own plugins: (name, module). Registered exactly like third-party plugins.
DEFAULT_PLUGINS: tuple[tuple[str, str], ...] = (
    ("graph-memory", "opensage.plugins.graph_memory"),
    ("dynamic-tools", "opensage.plugins.dynamic_tools"),
    ("agents", "opensage.plugins.agents"),
    ("agent-registry", "opensage.plugins.agent_registry"),
    ("intent-router", "opensage.plugins.routing"),
    ("coordinator", "opensage.plugins.coordinator"),
)


def _core_m001(conn) -> None:
    conn.execute(
        "CREATE TABLE sessions (id TEXT PRIMARY KEY, source TEXT NOT NULL, started_at REAL NOT NULL,"
        " ended_at REAL, meta TEXT NOT NULL DEFAULT '{}')"
    )


CORE_MIGRATIONS = [Migration(1, "sessions", _core_m001, apply_pg=pg_sessions)]


def _who() -> dict[str, str]:
    """The OS user and machine running this process (for ``sessions.meta``)."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = str(os.getuid())
    return {"user": user, "machine": socket.gethostname()}


@dataclass
class Session:
    """A host session (an OpenCode/Claude Code conversation, a ``chat`` REPL, a run).

    :param id: the host's session id (any string).
    :param source: who drives it: ``cli``, ``opencode``, ``claude``, ``hook``, ``run``...
    """

    id: str
    source: str
    host: "Host" = field(repr=False)
    started_at: float = field(default_factory=time.time)

    @property
    def workspace(self) -> Workspace:
        """The host's workspace (the project this session belongs to)."""
        return self.host.workspace


# -- plugin isolation ------------------------------------------------------------------
#: The failures of the broadcast hook call in progress on this thread/task: a list the
#: host's collector wrapper opens for the call, ``None`` outside a broadcast call.
_FAILURES: ContextVar[list[dict[str, str]] | None] = ContextVar("opensage_hook_failures", default=None)
#: The plugin whose hook implementation is running (so a ``register`` callback knows
#: whom a command or tool came from).
_CURRENT_PLUGIN: ContextVar[str] = ContextVar("opensage_current_plugin", default="")


def _spec_kinds() -> tuple[frozenset[str], frozenset[str]]:
    """(broadcast hooks, isolated hooks) read from :mod:`opensage.hookspecs`.

    *Isolated* hooks are every hook that is not ``firstresult`` (a plugin raising in one
    is logged and skipped); *broadcast* hooks are the isolated ones without a
    ``register`` argument (their failures reach :attr:`Host.last_failures`).
    """
    isolated, broadcast = set(), set()
    for name, fn in vars(hookspecs).items():
        opts = getattr(fn, "opensage_spec", None)
        if opts is None or opts.get("firstresult"):
            continue
        isolated.add(name)
        if "register" not in inspect.signature(fn).parameters:
            broadcast.add(name)
    return frozenset(broadcast), frozenset(isolated)


BROADCAST_HOOKS, ISOLATED_HOOKS = _spec_kinds()


def _report_failure(plugin: str, hook: str, exc: BaseException | str) -> None:
    """Log a plugin's failure and, inside a broadcast call, add it to that call's failures."""
    error = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    trace = os.environ.get("OPENSAGE_TRACE_PLUGINS") == "1" and not isinstance(exc, str)
    log.error("plugin %s failed in %s: %s", plugin, hook, error, exc_info=exc if trace else None)
    failures = _FAILURES.get()
    if failures is not None and hook in BROADCAST_HOOKS:
        failures.append({"plugin": plugin, "hook": hook, "error": error})


def _guard(function: Callable[..., Any], plugin: str, hook: str) -> Callable[..., Any]:
    """``function`` (a plain hook implementation) made to log and swallow its exceptions."""

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        token = _CURRENT_PLUGIN.set(plugin)
        try:
            return function(*args, **kwargs)
        except errors.StoreUnavailable:
            raise  # the shared store is down, not this plugin: the caller decides (hooks spool)
        except Exception as exc:
            _report_failure(plugin, hook, exc)
            return None
        finally:
            _CURRENT_PLUGIN.reset(token)

    return guarded


def _guard_wrapper(function: Callable[..., Any], plugin: str, hook: str) -> Callable[..., Any]:
    """``function`` (a ``wrapper=True`` or old-style ``hookwrapper=True`` generator) made safe.

    A wrapper that raises before its ``yield`` (or never yields) is reported and the call
    goes on without it; one that raises after its ``yield`` is reported and the inner
    result stands. The protocol is pluggy's (next / send / throw), so this generator
    stands in for the plugin's in both wrapper styles.
    """

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any):
        gen = function(*args, **kwargs)
        try:
            next(gen)
        except StopIteration:
            _report_failure(plugin, hook, f"RuntimeError: hook wrapper {function.__qualname__} did not yield")
            return (yield)
        except errors.StoreUnavailable:
            raise
        except Exception as exc:
            _report_failure(plugin, hook, exc)
            return (yield)
        try:
            result = yield
        except BaseException as inner:  # an inner implementation raised: the wrapper may handle it
            try:
                gen.throw(inner)
            except StopIteration as stop:
                return stop.value
            gen.close()
            raise RuntimeError(f"hook wrapper {function.__qualname__} of {plugin} yielded twice") from inner
        try:
            gen.send(result)
        except StopIteration as stop:
            return stop.value
        except errors.StoreUnavailable:
            raise
        except Exception as exc:
            _report_failure(plugin, hook, exc)
            return result
        gen.close()
        _report_failure(plugin, hook, f"RuntimeError: hook wrapper {function.__qualname__} yielded twice")
        return result

    return guarded


class _PluginManager(pluggy.PluginManager):
    """A pluggy manager whose non-``firstresult`` hook implementations cannot break a call.

    pluggy runs every implementation of one hook in a single loop and stops at the first
    exception; opensage promises that a raising plugin is logged and the others still
    run. So at registration each implementation of an isolated hook
    (:data:`ISOLATED_HOOKS`) has its ``HookImpl.function`` replaced by a guard that logs
    the exception with the plugin named and returns ``None`` (for wrappers: lets the call
    go on). The host's collector wrapper (``tryfirst``, outermost) gathers the failures
    of one broadcast call into :attr:`Host.last_failures`. Guarding at registration
    rather than re-running the remaining implementations from a wrapper keeps pluggy's
    order, its argument passing and its tracing untouched, and covers plugins registered
    later (``host.pm.register``). :class:`opensage.errors.StoreUnavailable` is the
    exception: the shared store being unreachable is no plugin's fault, so it reaches the
    caller (a command exits 1; a hook spools the event, :mod:`opensage.hook_queue`).

    :raises pluggy.PluginValidationError: as :meth:`pluggy.PluginManager.register`.
    """

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        plugin_name = super().register(plugin, name)
        if plugin_name is None:  # blocked
            return None
        for caller in self.get_hookcallers(plugin) or ():
            if caller.name not in ISOLATED_HOOKS:
                continue
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin:
                    wrap = _guard_wrapper if (impl.wrapper or impl.hookwrapper) else _guard
                    impl.function = wrap(impl.function, impl.plugin_name, caller.name)
        return plugin_name


class _FailureCollector:
    """The host's own plugin: one ``wrapper=True, tryfirst=True`` hookimpl per broadcast hook.

    It opens the failure list of each broadcast call (see :class:`_PluginManager`) and
    hands it to :attr:`Host.last_failures` when the call ends.
    """

    def __init__(self, host: "Host") -> None:
        @hookspecs.hookimpl(wrapper=True, tryfirst=True)
        def collect():
            failures: list[dict[str, str]] = []
            token = _FAILURES.set(failures)
            try:
                return (yield)
            finally:
                _FAILURES.reset(token)
                host.last_failures = failures

        for name in BROADCAST_HOOKS:
            setattr(self, name, collect)


class Host:
    """Load plugins, collect their commands and tools, and dispatch hooks.

    Every hook goes through ``pm.hook``. A plugin that raises in a hook that is not
    ``firstresult`` is logged and the others still run (:class:`_PluginManager`).

    :param workspace: the project whose ``.opencode/`` holds the state.
    :param plugins: extra plugin objects/modules to register (tests, embedders).
    :param load_entrypoints: load third-party plugins from the ``opensage`` entry-point
        group; defaults to True except under pytest.
    :param default_plugins: register :data:`DEFAULT_PLUGINS` (default True).
    :param blocked: plugin names (``graph-memory``, ``agents``...) never registered
        (``pm.set_blocked``); their commands are then unknown.
    :raises PluginError: a plugin implements a hook that does not exist (e.g. a misspelt
        ``session_evnt``) or with arguments its hookspec lacks; the message names the
        plugin. Checked once, at start-up (``pm.check_pending()``).
    """

    def __init__(
        self,
        workspace: Workspace,
        plugins: Iterable[Any] = (),
        load_entrypoints: bool | None = None,
        default_plugins: bool = True,
        blocked: Iterable[str] = (),
    ) -> None:
        self.workspace = workspace
        #: Plugins that raised during the latest broadcast hook call
        #: (``session_start``/``_event``/``_compact``/``_end``):
        #: ``[{"plugin", "hook", "error"}]``, empty when every implementation returned.
        self.last_failures: list[dict[str, str]] = []
        self.pm = _PluginManager("opensage")
        self.pm.add_hookspecs(hookspecs)
        if os.environ.get("OPENSAGE_TRACE_PLUGINS") == "1":
            self._enable_tracing()
        self._register(_FailureCollector(self), "opensage-host")
        for name in blocked:  # pluggy skips a blocked name at registration; nothing of it is imported
            self.pm.set_blocked(name)
        if default_plugins:
            for name, module in DEFAULT_PLUGINS:
                if not self.pm.is_blocked(name):
                    self._register(importlib.import_module(module), name)
        if load_entrypoints is None:
            load_entrypoints = not getattr(sys, "_called_from_test", False)
        if load_entrypoints:
            self._load_entrypoint_plugins()
        for plugin in plugins:
            self._register(plugin, None)
        self._check_pending()
        self._commands: dict[str, Command] | None = None
        self._db: Database | None = None
        self._services: dict[Any, Any] = {}

    def _register(self, plugin: Any, name: str | None) -> None:
        """Register ``plugin``; a hookimpl pluggy rejects becomes a :class:`PluginError`."""
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {name or _plugin_label(plugin)!r} is invalid: {exc}") from None

    def _check_pending(self) -> None:
        """Reject a hookimpl whose name matches no hookspec (pluggy accepts it silently)."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            plugin = self.pm.get_name(exc.plugin) or _plugin_label(exc.plugin)
            known = sorted(n for n in vars(hookspecs) if hasattr(getattr(hookspecs, n), "opensage_spec"))
            bad = [n for n in vars(self.pm.hook) if not n.startswith("_") and n not in known
                   and not getattr(self.pm.hook, n).has_spec()
                   and any(i.plugin is exc.plugin for i in getattr(self.pm.hook, n).get_hookimpls())]
            hint = ""
            if bad:
                import difflib

                close = difflib.get_close_matches(bad[0], known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise PluginError(
                f"plugin {plugin!r} implements unknown hook {bad[0] if bad else '?'!r}{hint}. "
                f"The hooks are: {', '.join(known)} (docs/plugin-hooks.md); fix the name or mark "
                "the implementation @hookimpl(optionalhook=True)."
            ) from None

    def _load_entrypoint_plugins(self) -> None:
        """Register the plugins of the :data:`ENTRY_POINT_GROUP` entry points, by entry-point name.

        ``importlib.metadata.entry_points(group=...)`` rather than pluggy's
        ``load_setuptools_entrypoints``, which opens every installed distribution's entry
        points one by one: 17 ms against 30 ms here with 167 distributions installed, on
        every command's start-up. A name already registered or blocked is skipped, as
        pluggy does.
        """
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if self.pm.get_plugin(ep.name) is not None or self.pm.is_blocked(ep.name):
                continue
            self._register(ep.load(), ep.name)

    # -- tracing -------------------------------------------------------------------
    def _enable_tracing(self) -> None:
        """``OPENSAGE_TRACE_PLUGINS=1``: print each hook call and its outcome on stderr.

        The one tracing path: pluggy's ``add_hookcall_monitoring`` sees every ``pm.hook``
        call, so nothing else in the host prints traces.
        """

        def before(hook_name, hook_impls, kwargs):
            names = ", ".join(i.plugin_name for i in hook_impls)
            print(f"[opensage trace] {hook_name}({', '.join(kwargs)}) -> [{names}]", file=sys.stderr)

        def after(outcome, hook_name, hook_impls, kwargs):
            exc = outcome.exception
            status = f"raised {type(exc).__name__}: {exc}" if exc else "ok"
            print(f"[opensage trace] {hook_name} {status}", file=sys.stderr)

        self.pm.add_hookcall_monitoring(before, after)

    # -- shared services -------------------------------------------------------------
    @property
    def db(self) -> Database:
        """The workspace database (created on first use, core migrations applied)."""
        if self._db is None:
            self.workspace.ensure_state_dir()
            self._db = open_database(self.workspace)
        # a set lookup once applied; retried when the first attempt found the team store down
        self._db.migrate("core", CORE_MIGRATIONS)
        return self._db

    def service(self, key: Any, factory: Callable[["Host"], Any]) -> Any:
        """A per-host singleton for plugins: created by ``factory(host)`` on first use."""
        if key not in self._services:
            # setdefault: when two threads race (the MCP server runs calls in threads), one instance wins
            self._services.setdefault(key, factory(self))
        return self._services[key]

    def close(self) -> None:
        """Close every service a plugin registered (those with a ``close()``) and the database
        connection of this thread; the host is not used afterwards.
        """
        for svc in self._services.values():
            close = getattr(svc, "close", None)
            if callable(close):
                close()
        self._services.clear()
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- commands --------------------------------------------------------------------
    @property
    def commands(self) -> dict[str, Command]:
        """All registered commands by name (collected once per host)."""
        commands = self._commands  # one read: another thread may reset it meanwhile
        if commands is None:
            commands = self._commands = self._collect_commands()
        return commands

    def refresh_commands(self) -> None:
        """Forget collected commands (after a plugin registers a new one, e.g. a generated tool)."""
        self._commands = None

    def _collect_commands(self) -> dict[str, Command]:
        found: dict[str, Command] = {}

        def register(command: Command) -> None:
            plugin = _CURRENT_PLUGIN.get()
            if not isinstance(command, Command):
                raise TypeError(f"plugin {plugin!r} registered {command!r}, not a Command")
            if command.name in found:
                other = found[command.name].plugin
                log.warning("command @%s from %s ignored: already registered by %s", command.name, plugin, other)
                return
            found[command.name] = Command(**{**command.__dict__, "plugin": plugin})

        self.pm.hook.register_commands(register=register, host=self)
        return dict(sorted(found.items()))

    def command(self, name: str) -> Command:
        """The command called ``name`` (with or without ``@``). Raises NotFoundError."""
        key = name.lstrip("@")
        try:
            return self.commands[key]
        except KeyError:
            from rapidfuzz import process

            close = process.extract(key, list(self.commands), limit=3, score_cutoff=60)
            hint = f" Did you mean {', '.join('@' + c[0] for c in close)}?" if close else ""
            raise NotFoundError(
                f"unknown command '@{key}'.{hint} Run 'opensage commands' to list the commands."
            ) from None

    def run(self, name: str, arguments: dict[str, Any], session: Session | None = None) -> CommandResult:
        """Validate ``arguments`` and run command ``name``. Raises UsageError before any write."""
        command = self.command(name)
        args = bind_arguments(command, arguments)
        result = command.handler(args, CommandContext(host=self, session=session))
        if not isinstance(result, CommandResult):
            result = CommandResult(text=str(result), data=result)
        return result

    def run_line(self, line: str, session: Session | None = None) -> CommandResult:
        """Parse and run one ``@name key=value ...`` line."""
        call = parse_line(line)
        return self.run(call.name, call.arguments, session=session)

    # -- tools -----------------------------------------------------------------------
    def tools(self, session: Session | None = None) -> dict[str, Tool]:
        """Tools agents may call, asked anew from every plugin on each call."""
        found: dict[str, Tool] = {}

        def register(tool: Tool) -> None:
            plugin = _CURRENT_PLUGIN.get()
            if not isinstance(tool, Tool):
                raise TypeError(f"plugin {plugin!r} registered {tool!r}, not a Tool")
            if tool.name in found:
                log.warning("tool %s from %s ignored: already registered", tool.name, plugin)
                return
            found[tool.name] = Tool(**{**tool.__dict__, "plugin": plugin})

        self.pm.hook.register_tools(register=register, session=session, host=self)
        return found

    # -- routing ---------------------------------------------------------------------
    def route(self, text: str, session: Session | None = None) -> Route | None:
        """Ask plugins (firstresult) where free text should go."""
        return self.pm.hook.route_intent(session=session, text=text)

    def compaction_context(self, session: Session, max_chars: int = 4000) -> str | None:
        """What to keep when the assistant compacts ``session``: the first plugin's non-None
        answer to the ``compaction_context`` hook (at most ``max_chars`` characters), or None.
        """
        return self.pm.hook.compaction_context(session=session, max_chars=max_chars)

    def prompt_context(self, session: Session, text: str, max_chars: int = 2000) -> str | None:
        """Memory relevant to the prompt ``text`` the user just sent (firstresult ``prompt_context``)."""
        return self.pm.hook.prompt_context(session=session, text=text, max_chars=max_chars)

    # -- sessions --------------------------------------------------------------------
    def classify_task(self, task: str) -> str:
        """The task type of ``task``: one of :data:`opensage.types.TASK_TYPES`.

        Asks the ``classify_task`` hook (the agent registry answers); with no plugin
        answering it is ``implement``, the registry's own answer for unmatched text.
        """
        return self.pm.hook.classify_task(task=task) or "implement"

    def recommend_agent(self, task: str, task_type: str, candidates: list[str]) -> str | None:
        """The agent name to reuse for ``task`` (``recommend_agent`` hook), or None: generate one."""
        return self.pm.hook.recommend_agent(host=self, task=task, task_type=task_type, candidates=list(candidates))

    def agent_run_finished(self, agent: str, task_type: str, result: Any) -> None:
        """Tell every plugin that an agent run finished (``agent_run_finished``; a raising plugin is logged)."""
        self.pm.hook.agent_run_finished(host=self, agent=agent, task_type=task_type, result=result)

    def run_topology(self, topology: str, task: str, **options: Any) -> Any:
        """An awaitable running agents on ``task`` (``run_topology`` hook; the agents plugin answers).

        :param topology: ``single``, ``vertical`` or ``horizontal``.
        :param options: the hook's other arguments (``task_type``, ``subtasks``, ``strategies``,
            ``merge_strategy``, ``verifier``, ``run_id``, ``session``, ``budget``, ``model``,
            ``ask_policy``, ``on_event``); missing ones are None.
        :raises UsageError: no plugin runs agents (the agents plugin is blocked).
        """
        from opensage.errors import UsageError

        names = ("task_type", "subtasks", "strategies", "merge_strategy", "verifier", "run_id", "session",
                 "budget", "model", "ask_policy", "on_event")
        unknown = set(options) - set(names)
        if unknown:
            raise TypeError(f"run_topology: unknown options {sorted(unknown)}")
        runner = self.pm.hook.run_topology(host=self, topology=topology, task=task,
                                           **{n: options.get(n) for n in names})
        if runner is None:
            raise UsageError("no plugin runs agents (the agents plugin is blocked or not installed); "
                             "enable it to run a task.")
        return runner

    def remember_run(self, report: Any) -> dict[str, str]:
        """Record a coordinated run in memory (``remember_run`` hook; graph memory answers).

        :returns: ``{role: node id}``; empty when no plugin keeps memory (graph-memory blocked).
        """
        return self.pm.hook.remember_run(host=self, report=report) or {}

    def agent_stats(self) -> list[dict[str, Any]]:
        """Run totals per (agent, task type) from the ``agent_stats`` hook; empty when no plugin keeps them."""
        return self.pm.hook.agent_stats(host=self) or []

    def session(self, session_id: str | None = None, source: str = "cli") -> Session:
        """Get or create the session ``session_id`` (a new id when None); not started.

        A new session records who ran it in ``sessions.meta``: ``user`` (the OS login),
        ``machine`` (the host name); ``source`` is the host program (``claude``,
        ``opencode``, ``cli``...). On a team store that tells whose session an episode was.
        """
        sid = session_id or f"{source}-{uuid.uuid4().hex[:12]}"
        db = self.db
        row = db.conn.execute("SELECT source, started_at FROM sessions WHERE id=?", (sid,)).fetchone()
        if row is not None:
            return Session(id=sid, source=row["source"], host=self, started_at=row["started_at"])
        now = time.time()
        with db.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO sessions(id, source, started_at, meta) VALUES (?,?,?,?)",
                (sid, source, now, json.dumps(_who())),
            )
        return Session(id=sid, source=source, host=self, started_at=now)

    def start_session(self, session: Session) -> None:
        """Fire ``session_start``; plugins that raised are in :attr:`last_failures`."""
        self.pm.hook.session_start(session=session)

    def record(self, session: Session, event: SessionEvent) -> None:
        """Fire ``session_event`` (plugins record it as an episode)."""
        self.pm.hook.session_event(session=session, event=event)

    def compact(self, session: Session) -> None:
        """Fire ``session_compact``; plugins that raised are in :attr:`last_failures`."""
        self.pm.hook.session_compact(session=session)

    def end_session(self, session: Session) -> None:
        """Fire ``session_end`` and mark the session ended in the ``sessions`` table."""
        self.pm.hook.session_end(session=session)
        with self.db.transaction() as conn:
            conn.execute("UPDATE sessions SET ended_at=? WHERE id=?", (time.time(), session.id))


def _plugin_label(plugin: Any) -> str:
    """A readable name for a plugin object that has no registered name."""
    return getattr(plugin, "__name__", None) or type(plugin).__qualname__


def event_from_json(data: str | dict) -> SessionEvent:
    """Parse a :class:`SessionEvent` from JSON text or a dict. Raises UsageError."""
    from opensage.untrusted import depth_exceeds, loads, scrub, too_deep_message

    if isinstance(data, str):
        obj = loads(data, "event")
    else:
        if depth_exceeds(data):
            raise UsageError(too_deep_message("event"))
        obj = scrub(data)  # lone surrogates cannot be stored as UTF-8: U+FFFD
    try:
        return SessionEvent.model_validate(obj)
    except Exception as exc:
        raise UsageError(f"invalid session event: {exc}") from None
