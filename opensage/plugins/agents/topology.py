"""Agent topologies that really run: vertical chains and horizontal ensembles.

*Vertical decomposition* (OpenSage §3.1): a task split into subtasks, one specialised
agent per subtask, run in order; each step gets a short summary of what the previous
steps produced and changed. Each step works in its own scratch copy of the workspace
and its changes are applied only when it succeeds, so a failed step leaves no
half-written files. A failed step stops the chain, or is re-planned once.

*Horizontal ensemble*: the same task attempted by several agents with different
strategies, in parallel (asyncio), each in its own scratch copy under
``.opencode/ensembles/<run-id>/<strategy>/`` (kept for inspection); one result is
chosen by ``majority_vote``, ``llm_judge`` or ``best_score`` and its changes are applied
to the workspace. Unlike the reference implementation (members share one container
and a single LLM call merges), members cannot clobber each other and the merge can be
decided by a verifier command (the project's tests).

Agents are reused from the registry when it recommends one for the subtask's task
type, and generated otherwise.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import os
import re
import shutil
import uuid
from collections import Counter
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from pydantic import BaseModel, Field, field_validator

from opensage import protected
from opensage.camel import camel, camel_dict
from opensage.errors import ModelError, OpenSageError, UsageError
from opensage.ignore import IgnoreRules, walk as walk_project
from opensage.plugins.agents.runner import AgentRunner, Budget, run_shell, tree_snapshot
from opensage.store import new_run_id
from opensage.types import MERGE_STRATEGIES, NO_AGENT, AgentResult, AgentSpec

if TYPE_CHECKING:
    from opensage.host import Host, Session

__all__ = [
    "MERGE_STRATEGIES",
    "Changes",
    "ScratchCopy",
    "StepReport",
    "ChainReport",
    "MemberReport",
    "EnsembleReport",
    "vertical",
    "horizontal",
    "pick_agent",
    "record_result",
    "default_verifier",
    "verifier_score",
    "normalise_answer",
    "new_run_id",
]

MergeStrategy = Literal["majority_vote", "llm_judge", "best_score"]
#: Characters of a step's output passed on to the next step.
SUMMARY_CHARS = 600
DEFAULT_VERIFIER = "python -m pytest -q"

Emit = Callable[[dict], None]


def slug(text: str, limit: int = 40) -> str:
    """A kebab-case ASCII slug of ``text`` (runs of other characters become one ``-``), at
    most ``limit`` characters; ``"x"`` when nothing is left. Used in run and folder names.
    """
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return (s[:limit].rstrip("-") or "x")


# -- scratch copies ----------------------------------------------------------------------
@dataclass
class Changes:
    """What a scratch copy changed relative to the tree it was copied from (posix paths)."""

    added: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        """Every added, modified and deleted path (workspace-relative, posix), sorted."""
        return sorted(self.added + self.modified + self.deleted)

    def __bool__(self) -> bool:
        return bool(self.added or self.modified or self.deleted)

    def as_dict(self) -> dict[str, list[str]]:
        """``{"added": [...], "modified": [...], "deleted": [...]}`` (relative posix paths)."""
        return {"added": self.added, "modified": self.modified, "deleted": self.deleted}


@dataclass
class ScratchCopy:
    """A copy of the project tree (without what :mod:`opensage.ignore` skips: built-in folders, .gitignore'd paths) an agent may change freely.

    :param source: the project root it was copied from.
    :param path: the copy.
    :param manifest: ``{path: sha256}`` of the source at copy time.
    """

    source: Path
    path: Path
    manifest: dict[str, str]
    refused: list[tuple[str, str]] = field(default_factory=list)
    kept: bool = False
    declined: bool = False

    @classmethod
    def create(cls, source: Path, dest: Path) -> "ScratchCopy":
        """Copy ``source`` into the new folder ``dest`` (must not exist yet)."""
        source, dest = Path(source).resolve(), Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)

        rules = IgnoreRules(source)

        def ignore(directory: str, names: list[str]) -> set[str]:
            rules.enter(directory)
            return {n for n in names if rules.ignored(os.path.join(directory, n), os.path.isdir(os.path.join(directory, n)))}

        shutil.copytree(source, dest, ignore=ignore, symlinks=True)
        return cls(source, dest.resolve(), tree_snapshot(dest))

    def changes(self) -> Changes:
        """What differs between the copy now and the source at copy time (by sha256 of each
        file :func:`~opensage.plugins.agents.runner.tree_snapshot` keeps).
        """
        now = tree_snapshot(self.path)
        return Changes(
            added=sorted(p for p in now if p not in self.manifest),
            modified=sorted(p for p in now if p in self.manifest and now[p] != self.manifest[p]),
            deleted=sorted(p for p in self.manifest if p not in now),
        )

    def diff(self, max_chars: int = 6000) -> str:
        """Unified diff of the copy against the source, cut to ``max_chars``."""
        out: list[str] = []
        ch = self.changes()
        for rel in ch.paths:
            old = _text(self.source / rel) if rel not in ch.added else ""
            new = _text(self.path / rel) if rel not in ch.deleted else ""
            out.extend(difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"a/{rel}", f"b/{rel}"))
        text = "".join(out)
        return text if len(text) <= max_chars else text[:max_chars] + "\n[... diff cut]"

    def remove(self) -> None:
        """Delete the copy after its changes were applied; kept when the user declined
        them or when a change was refused (its path was shown, so it can be inspected)."""
        if self.kept:
            return
        shutil.rmtree(self.path, ignore_errors=True)

    def summary(self) -> list[dict[str, Any]]:
        """One row per changed file: ``{"path", "change": added|modified|deleted, "added":
        lines, "removed": lines, "refused": reason or None}`` (binary files: lines None)."""
        ch = self.changes()
        extra = _user_protected(self.source)
        rows = []
        for rel in ch.paths:
            kind = "added" if rel in ch.added else "deleted" if rel in ch.deleted else "modified"
            old = _text(self.source / rel) if kind != "added" else ""
            new = _text(self.path / rel) if kind != "deleted" else ""
            plus = minus = 0
            for line in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0):
                if line.startswith("+") and not line.startswith("+++"):
                    plus += 1
                elif line.startswith("-") and not line.startswith("---"):
                    minus += 1
            rows.append({"path": rel, "change": kind, "added": plus, "removed": minus,
                         "refused": self._refusal(rel, kind, extra)})
        return rows

    def _refusal(self, rel: str, kind: str, extra: list[str]) -> str | None:
        pattern = protected.match(rel, extra)
        if pattern is not None:
            return (f"protected path ({pattern}): files there run on the host; review "
                    f"{self.path / rel} and copy it yourself if you want it")
        src = self.path / rel
        if kind == "deleted" and os.path.lexists(src):
            return "the agent replaced it with something other than a regular file"
        return None

    def apply(self) -> tuple[list[str], list[str]]:
        """Copy this scratch copy's changes into the source tree, if :data:`REVIEW` allows.

        Only regular files are written, by path inside the project: every folder on the
        way is opened with ``O_NOFOLLOW`` relative to the previous one, so a symlink in
        the project (``shared -> ../outside``) is never followed, and the file is written
        to a temporary name in that folder and renamed over the target (never through a
        symlink). Refused, and listed in :attr:`refused` with the reason: protected paths
        (:mod:`opensage.protected`, plus the user's ``protected_paths``), a path through
        a symlink, a target that is not a regular file, a source that is not one. A file
        the source changed since the copy was made is a *conflict* and is left alone.

        :returns: (applied paths, conflicting paths); nothing when the review declined.
        """
        self.refused = []
        review = REVIEW.get()
        if review is not None and self.changes() and not review(self):
            self.kept = self.declined = True
            return [], []
        ch = self.changes()
        extra = _user_protected(self.source)
        applied, conflicts = [], []
        for rel in ch.paths:
            kind = "added" if rel in ch.added else "deleted" if rel in ch.deleted else "modified"
            why = self._refusal(rel, kind, extra)
            if why is None:
                try:
                    done = _write_in(self.source, rel, None if kind == "deleted" else self.path / rel,
                                     self.manifest.get(rel))
                except _Refused as exc:
                    why = str(exc)
                else:
                    (applied if done else conflicts).append(rel)
                    continue
            self.refused.append((rel, why))
        if self.refused:
            self.kept = True
        return applied, conflicts


class _Refused(Exception):
    pass


#: The review step of :meth:`ScratchCopy.apply`: None applies at once; else a callable
#: ``review(scratch) -> bool`` (``opensage run --review`` asks the user, ``--no-apply``
#: declines). A context variable, so it reaches the worker threads of a run.
REVIEW: ContextVar[Callable[["ScratchCopy"], bool] | None] = ContextVar("opensage_review", default=None)


def _user_protected(root: Path) -> list[str]:
    """The user's extra protected patterns (``sandbox.protected_paths``; never the project's)."""
    from opensage import sandbox

    try:
        return list(sandbox.load_config(root).protected_paths)
    except OpenSageError:
        return []


def _write_in(root: Path, rel: str, source: Path | None, expected: str | None) -> bool:
    """Write ``source`` (None: delete) to ``root/rel`` without following any symlink.

    :returns: False on a conflict (the target's sha256 is not ``expected``).
    :raises _Refused: a component is a symlink or not a folder, or source/target is not a
        regular file.
    """
    import stat

    parts = Path(rel).parts
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fds = [os.open(root, flags)]
    try:
        for name in parts[:-1]:
            try:
                fds.append(os.open(name, flags, dir_fd=fds[-1]))
            except FileNotFoundError:
                if source is None:
                    return expected is None
                os.mkdir(name, 0o755, dir_fd=fds[-1])
                fds.append(os.open(name, flags, dir_fd=fds[-1]))
            except OSError:  # ELOOP / ENOTDIR: a symlink or a file on the way
                raise _Refused(f"{name}/ in the project is a symlink or not a folder; nothing is written "
                               "through it") from None
        d, name = fds[-1], parts[-1]
        try:
            st = os.stat(name, dir_fd=d, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise _Refused("the project's file is a symlink or not a regular file; left alone")
        current = None
        if st is not None:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=d)
            with os.fdopen(fd, "rb") as f:
                current = hashlib.sha256(f.read()).hexdigest()
        if current != expected:
            return False
        if source is None:
            os.unlink(name, dir_fd=d)
            return True
        try:
            sfd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            raise _Refused("the agent's file is a symlink or unreadable; not applied") from None
        with os.fdopen(sfd, "rb") as src:
            sst = os.fstat(src.fileno())
            if not stat.S_ISREG(sst.st_mode):
                raise _Refused("the agent's file is not a regular file; not applied")
            data = src.read()
        tmp = f".{name}.opensage-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      sst.st_mode & 0o777, dir_fd=d)
        try:
            with os.fdopen(tfd, "wb") as out:
                out.write(data)
            os.replace(tmp, name, src_dir_fd=d, dst_dir_fd=d)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=d)
            except OSError:
                pass
            raise
        return True
    finally:
        for fd in fds:
            os.close(fd)


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


# -- agents: reuse from the registry or generate -------------------------------------------
def _classify(host: "Host", task: str) -> str:
    return host.classify_task(task)


def pick_agent(host: "Host", task: str, *, specialization: str = "", mode: str = "subagent",
               task_type: str | None = None) -> tuple[AgentSpec, bool]:
    """The agent for ``task``: the registry's recommendation when one fits, else a new one.

    Only generated agents whose files still exist are candidates; the registry decides
    (the ``recommend_agent`` hook; the agent registry answers with an upper confidence bound on the success
    rate, weighted by similarity to past tasks and with a prior from the agent's other
    task types), and None from it means "generate".

    :param task_type: one of :data:`opensage.types.TASK_TYPES` (None: classified from the text).
    :returns: (spec, reused) — ``reused`` is True when an existing agent was loaded.
    :raises ModelError: generating the agent failed (nothing written).
    """
    from opensage.plugins.agents.files import list_agents, load_agent
    from opensage.plugins.agents.generate import generate_agent

    existing = [a.name for a in list_agents(host.workspace)]
    name = None
    if existing:
        name = host.recommend_agent(task, task_type or _classify(host, task), existing)
    if name:
        try:
            return load_agent(host.workspace, name), True
        except OpenSageError:
            pass  # its file became unreadable: generate a new one
    spec = generate_agent(host, task, mode=mode, specialization=specialization)
    return spec, False


def record_result(host: "Host", spec: AgentSpec, result: AgentResult, task_type: str | None = None) -> None:
    """Announce one finished agent run (``agent_run_finished`` hook; the agent registry records it)."""
    host.agent_run_finished(spec.name, task_type or _classify(host, result.task or spec.task), result)


# -- vertical ----------------------------------------------------------------------------
class Decomposition(BaseModel):
    """The model's split of a task into ordered subtasks."""

    subtasks: list[str] = Field(min_length=1, max_length=8,
                                description="ordered, self-contained subtasks; each one a clear instruction")
    reason: str = Field("", description="one sentence: why this split")


@dataclass
class StepReport:
    index: int
    subtask: str
    agent: str
    reused: bool
    result: AgentResult
    applied: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    scratch: str = ""
    replanned: bool = False
    scratch_declined: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The step as JSON: its agent's result flattened in (``tokens``, ``costUsd`` in USD,
        ``latencyMs`` in ms), ``applied``/``conflicts`` as relative paths.
        """
        return {
            "index": self.index, "subtask": self.subtask, "agent": self.agent, "reused": self.reused,
            "success": self.result.success, "error": self.result.error, "output": self.result.output,
            "filesChanged": self.result.files_changed, "applied": self.applied, "conflicts": self.conflicts,
            "tokens": self.result.tokens, "costUsd": self.result.cost_usd, "latencyMs": self.result.latency_ms,
            "steps": self.result.steps, "scratch": self.scratch, "replanned": self.replanned,
        }


@camel
@dataclass
class ChainReport:
    """A vertical run: its steps, whether it succeeded, and which step failed and why."""

    run_id: str
    task: str
    subtasks: list[str]
    steps: list[StepReport]
    success: bool
    failed_step: int | None = None
    reason: str | None = None
    replanned: bool = False
    planned_by_model: bool = False

    @property
    def tokens(self) -> int:
        """Prompt + completion tokens of every step."""
        return sum(s.result.tokens for s in self.steps)

    @property
    def cost_usd(self) -> float:
        """Spend of every step, in USD (litellm's price map)."""
        return sum(s.result.cost_usd for s in self.steps)

    @property
    def files_changed(self) -> list[str]:
        """Relative paths any step applied to the project, sorted, each once."""
        return sorted({p for s in self.steps for p in s.applied})

    def as_dict(self) -> dict[str, Any]:
        """The chain as JSON (``topology: "vertical"``, totals in tokens/USD, ``steps`` as
        :meth:`StepReport.as_dict`).
        """
        return {**camel_dict(self, exclude={"steps"}), "topology": "vertical", "filesChanged": self.files_changed,
                "tokens": self.tokens, "costUsd": self.cost_usd, "steps": [s.as_dict() for s in self.steps]}

    def text(self) -> str:
        """A few lines for a terminal: one per step (ok/FAILED, agent, changed files, why it
        failed), then the totals or where the chain stopped.
        """
        lines = [f"vertical chain {self.run_id}: {len(self.steps)} step(s) run of {len(self.subtasks)} planned"]
        for s in self.steps:
            mark = "ok" if s.result.success else "FAILED"
            lines.append(f"  {s.index}. [{mark}] @{s.agent}{' (reused)' if s.reused else ''}: {s.subtask}")
            if s.applied:
                lines.append(f"     changed: {', '.join(s.applied)}")
            if not s.result.success:
                lines.append(f"     why: {s.result.error}")
        if self.success:
            lines.append(f"done: {len(self.files_changed)} file(s) changed, {self.tokens} tokens, ${self.cost_usd:.4f}")
        else:
            lines.append(f"stopped at step {self.failed_step}: {self.reason}; "
                         "the workspace holds only the changes of the steps that succeeded")
        return "\n".join(lines)


def _summary(step: StepReport) -> str:
    out = step.result.output.strip().replace("\n", " ")
    if len(out) > SUMMARY_CHARS:
        out = out[:SUMMARY_CHARS] + "..."
    changed = ", ".join(step.applied) or "none"
    return f"Step {step.index} ({step.subtask}) by @{step.agent}: {out} Files changed: {changed}."


async def propose_subtasks(task: str, model: str | None = None, failure: str | None = None,
                           done: list[str] | None = None) -> Decomposition:
    """Ask the model to split ``task`` (or re-plan the rest after ``failure``). Raises ModelError."""
    from opensage import llm

    system = ("You plan work for a team of specialised coding agents. Split the task into the fewest "
              "ordered subtasks (1-8) that can each be done by one agent, in order. Each subtask must be "
              "a self-contained instruction.")
    user = f"Task: {task}"
    if failure:
        user += (f"\n\nSteps already done: {'; '.join(done or []) or 'none'}.\nThe next step failed: {failure}\n"
                 "Re-plan only the remaining work, avoiding the cause of the failure.")
    res = await llm.astructured([{"role": "system", "content": system}, {"role": "user", "content": user}],
                                Decomposition, model=model)
    return res.value


async def vertical(
    host: "Host",
    task: str,
    subtasks: list[str] | None = None,
    *,
    session: "Session | None" = None,
    budget: Budget | None = None,
    model: str | None = None,
    ask_policy: Literal["allow", "deny"] = "deny",
    replan: bool = True,
    run_id: str | None = None,
    on_event: Emit | None = None,
) -> ChainReport:
    """Run ``task`` as a chain of agents, one per subtask, in order.

    :param subtasks: the ordered steps; when empty the model proposes them.
    :param replan: on the first failed step, ask the model once for a new plan of the
        remaining work and continue with it; a second failure stops the chain.
    :returns: :class:`ChainReport` (``failed_step`` is 1-based).
    :raises UsageError: empty task; no model configured (ModelNotConfigured).
    :raises ModelError: the model could not propose subtasks.
        A step whose agent cannot be generated, or whose agent fails, is a failed step.
    """
    if not task or not task.strip():
        raise UsageError("task must not be empty; say what the chain should do, e.g. task=\"add a CLI flag\".")
    from opensage import llm

    llm.model_name(model)  # ModelNotConfigured before anything is written
    emit = on_event or (lambda e: None)
    run_id = run_id or new_run_id()
    planned = False
    plan = [s.strip() for s in (subtasks or []) if s and s.strip()]
    if not plan:
        plan = (await propose_subtasks(task, model)).subtasks
        planned = True
    emit({"kind": "plan", "topology": "vertical", "steps": list(plan), "run_id": run_id})
    base = host.workspace.state_dir / "chains" / run_id
    reports: list[StepReport] = []
    replanned = False
    i = 0
    while i < len(plan):
        subtask = plan[i]
        index = i + 1
        context = "\n".join(_summary(r) for r in reports if r.result.success)
        context = f"Overall task: {task}\n{context}" if context else f"Overall task: {task}"
        try:
            spec, reused = await asyncio.to_thread(pick_agent, host, subtask,
                                                   specialization=f"step {index} of {len(plan)} of: {task}")
        except ModelError as exc:
            result = AgentResult(agent=NO_AGENT, task=subtask, error=f"no agent for this step: {exc}")
            step = StepReport(index, subtask, NO_AGENT, False, result, replanned=replanned)
        else:
            emit({"kind": "agent", "step": index, "agent": spec.name, "subtask": subtask, "reused": reused})
            scratch = await asyncio.to_thread(ScratchCopy.create, host.workspace.root,
                                              base / f"step-{index}-{slug(spec.name, 30)}{'-r' if replanned else ''}")

            def step_event(e: dict, _i=index) -> None:
                emit({**e, "step_index": _i})

            runner = AgentRunner(host, spec, root=scratch.path, session=session, budget=budget or Budget(),
                                 model=model, ask_policy=ask_policy, on_event=step_event)
            result = await runner.arun(subtask, context=context)
            await asyncio.to_thread(record_result, host, spec, result)
            step = StepReport(index, subtask, spec.name, reused, result, scratch=str(scratch.path),
                              replanned=replanned)
            if result.success:
                step.applied, step.conflicts = await asyncio.to_thread(scratch.apply)
                await asyncio.to_thread(scratch.remove)  # applied: the copy has nothing left to show
                step.scratch = str(scratch.path) if scratch.kept else ""
                step.scratch_declined = scratch.declined
        reports.append(step)
        emit({"kind": "step_done", "step": index, "agent": step.agent, "success": result.success,
              "applied": step.applied, "error": result.error})
        if result.success and step.scratch and not step.applied and step.scratch_declined:
            # the user declined (or --no-apply): the next step would start without this one
            return ChainReport(run_id, task, plan, reports, False, failed_step=index,
                               reason=f"the changes of step {index} were not applied (kept in {step.scratch}); "
                                      "the chain stops there", replanned=replanned, planned_by_model=planned)
        if result.success:
            i += 1
            continue
        reason = f"@{step.agent} failed on \"{subtask}\": {result.error}"
        if replan and not replanned:
            replanned = True
            done = [r.subtask for r in reports if r.result.success]
            try:
                new = await propose_subtasks(task, model, failure=f"step {index} ({subtask}): {result.error}",
                                             done=done)
            except ModelError as exc:
                reason += f"; re-planning failed too: {exc}"
            else:
                plan = plan[:i] + list(new.subtasks)
                emit({"kind": "replan", "step": index, "steps": list(plan)})
                continue
        return ChainReport(run_id, task, plan, reports, False, failed_step=index, reason=reason,
                           replanned=replanned, planned_by_model=planned)
    return ChainReport(run_id, task, plan, reports, True, replanned=replanned, planned_by_model=planned)


# -- horizontal ----------------------------------------------------------------------------
class Strategies(BaseModel):
    """Distinct approaches to one task, for an ensemble."""

    strategies: list[str] = Field(min_length=2, max_length=5,
                                  description="2-5 genuinely different approaches, one short sentence each")


class JudgeVerdict(BaseModel):
    """The judge's pick among ensemble members."""

    choice: int = Field(ge=1, description="number of the best candidate (1-based)")
    reason: str = Field(min_length=1, description="why it is better than the others")


@dataclass
class MemberReport:
    index: int
    strategy: str
    agent: str
    reused: bool
    result: AgentResult
    scratch: str
    changes: Changes
    score: dict[str, Any] | None = None
    diff: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The member as JSON: its result flattened in (``tokens``, ``costUsd`` in USD,
        ``latencyMs`` in ms), ``changes`` as :meth:`Changes.as_dict`, the verifier ``score``.
        """
        return {
            "index": self.index, "strategy": self.strategy, "agent": self.agent, "reused": self.reused,
            "success": self.result.success, "error": self.result.error, "output": self.result.output,
            "changes": self.changes.as_dict(), "score": self.score, "tokens": self.result.tokens,
            "costUsd": self.result.cost_usd, "latencyMs": self.result.latency_ms, "scratch": self.scratch,
        }


@camel
@dataclass
class EnsembleReport:
    """A horizontal run: every member, the merge decision and what was applied."""

    run_id: str
    task: str
    merge_strategy: str
    members: list[MemberReport]
    chosen: int | None
    reason: str
    success: bool
    applied: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    verifier: str | None = None
    directory: str = ""
    merge_tokens: int = 0
    merge_cost_usd: float = 0.0

    @property
    def tokens(self) -> int:
        """Prompt + completion tokens of every member plus the merge judge's."""
        return sum(m.result.tokens for m in self.members) + self.merge_tokens

    @property
    def cost_usd(self) -> float:
        """Spend of every member plus the merge judge, in USD."""
        return sum(m.result.cost_usd for m in self.members) + self.merge_cost_usd

    @property
    def files_changed(self) -> list[str]:
        """Relative paths applied to the project from the chosen member."""
        return list(self.applied)

    @property
    def answer(self) -> str:
        """The chosen member's final answer ("" when none was chosen)."""
        return self.members[self.chosen - 1].result.output if self.chosen else ""

    def as_dict(self) -> dict[str, Any]:
        """The ensemble as JSON (``topology: "horizontal"``, totals in tokens/USD,
        ``members`` as :meth:`MemberReport.as_dict`).
        """
        return {**camel_dict(self, exclude={"members", "merge_tokens", "merge_cost_usd"}), "topology": "horizontal",
                "answer": self.answer, "tokens": self.tokens, "costUsd": self.cost_usd,
                "members": [m.as_dict() for m in self.members]}

    def text(self) -> str:
        """A few lines for a terminal: one per member (state, verifier score, changed files),
        then the choice and what was applied.
        """
        lines = [f"horizontal ensemble {self.run_id}: {len(self.members)} member(s), merge={self.merge_strategy}"]
        for m in self.members:
            mark = "*" if m.index == self.chosen else " "
            state = "ok" if m.result.success else f"FAILED ({m.result.error})"
            score = ""
            if m.score:
                score = f" verifier: {'pass' if m.score['passed_all'] else 'fail'}" \
                        f" ({m.score['passed']} passed, {m.score['failed']} failed)"
            lines.append(f" {mark}{m.index}. @{m.agent} [{m.strategy}] {state}{score}; "
                         f"changed: {', '.join(m.changes.paths) or 'nothing'}")
        lines.append(f"chosen: {self.chosen or 'none'} — {self.reason}")
        if self.applied:
            lines.append(f"applied to the workspace: {', '.join(self.applied)}")
        if self.conflicts:
            lines.append(f"not applied (changed in the workspace meanwhile): {', '.join(self.conflicts)}")
        lines.append(f"member copies kept in {self.directory}")
        return "\n".join(lines)


def normalise_answer(text: str) -> str:
    """Case-folded, whitespace-collapsed answer without surrounding quotes or final punctuation."""
    t = " ".join((text or "").split()).casefold()
    return t.strip(" \"'`").rstrip(".!").strip()


def default_verifier(root: Path) -> str | None:
    """``python -m pytest -q`` when the project has tests (``test_*.py``/``*_test.py``), else None."""
    for dirpath, dirnames, filenames in walk_project(root):
        if any(re.match(r"(test_.*|.*_test)\.py$", f) for f in filenames):
            return DEFAULT_VERIFIER
    return None


_COUNT = re.compile(r"(\d+) (passed|failed|errors?)\b")


def verifier_score(returncode: int, output: str) -> dict[str, Any]:
    """Score a verifier run: exit code 0 passes; pytest's summary gives passed/failed counts.

    :returns: ``{"passed_all": bool, "passed": int, "failed": int, "returncode": int}``
        (``failed`` counts failures and errors; without a pytest summary a non-zero exit
        counts as one failure).
    """
    passed = failed = 0
    for n, kind in _COUNT.findall(output or ""):
        if kind == "passed":
            passed += int(n)
        else:
            failed += int(n)
    if returncode != 0 and failed == 0:
        failed = 1
    return {"passed_all": returncode == 0, "passed": passed, "failed": failed, "returncode": returncode}


async def propose_strategies(task: str, model: str | None = None) -> list[str]:
    """Ask the model for genuinely different approaches to ``task`` (one per ensemble member).

    :param model: litellm model string (None: ``$OPENSAGE_MODEL``).
    :returns: 2 to 5 strategy sentences (the :class:`Strategies` schema bounds them).
    :raises ModelNotConfigured: no model configured.
    :raises ModelError: the provider failed, or no answer fitted the schema.
    """
    from opensage import llm

    res = await llm.astructured([
        {"role": "system", "content": "You propose genuinely different approaches to one coding task, "
                                      "to be attempted in parallel by separate agents."},
        {"role": "user", "content": f"Task: {task}"},
    ], Strategies, model=model)
    return res.value.strategies


async def _judge(task: str, members: list[MemberReport], model: str | None) -> tuple[int, str, Any]:
    from opensage import llm

    parts = []
    for m in members:
        state = "finished" if m.result.success else f"FAILED: {m.result.error}"
        parts.append(f"### Candidate {m.index} (strategy: {m.strategy}; {state})\n"
                     f"Final answer:\n{m.result.output[:2000]}\n\nChanges (unified diff):\n{m.diff or '(none)'}")
    res = await llm.astructured([
        {"role": "system", "content": "You are the judge of an ensemble of coding agents that attempted the "
                                      "same task. Compare the candidates on correctness, completeness and "
                                      "risk, pick the best one and explain why."},
        {"role": "user", "content": f"Task: {task}\n\n" + "\n\n".join(parts)},
    ], _verdict_model(len(members)), model=model)
    return res.value.choice, res.value.reason, res.usage


def _verdict_model(n: int) -> type[JudgeVerdict]:
    """:class:`JudgeVerdict` whose ``choice`` must be 1..n (an out-of-range pick is fed back to the model)."""

    class Verdict(JudgeVerdict):
        @field_validator("choice")
        @classmethod
        def _in_range(cls, v: int) -> int:
            if v > n:
                raise ValueError(f"there are only {n} candidates; choose a number from 1 to {n}")
            return v

    Verdict.__name__ = Verdict.__qualname__ = "JudgeVerdict"
    return Verdict


async def horizontal(
    host: "Host",
    task: str,
    strategies: list[str] | None = None,
    merge_strategy: MergeStrategy | None = None,
    *,
    verifier: str | None = None,
    session: "Session | None" = None,
    budget: Budget | None = None,
    model: str | None = None,
    ask_policy: Literal["allow", "deny"] = "deny",
    run_id: str | None = None,
    on_event: Emit | None = None,
) -> EnsembleReport:
    """Run one agent per strategy in parallel, each in its own scratch copy, and merge.

    :param strategies: approaches, one agent each (at least 2); when empty the model
        proposes 2-5.
    :param merge_strategy: ``majority_vote`` (most frequent normalised final answer among
        members that finished; ties go to the earlier member), ``llm_judge`` (the model
        compares the candidates and explains its pick) or ``best_score`` (``verifier`` is
        run in each copy in the sandbox; passing beats failing, then fewer failures, then
        more passes, then the earlier member). Default: ``best_score`` when a verifier is
        given or the project has tests, else ``llm_judge``.
    :param verifier: shell command deciding ``best_score`` (default ``python -m pytest -q``
        when the project has tests).
    :returns: :class:`EnsembleReport`; the chosen member's changes are applied to the
        workspace only if it succeeded (for ``best_score``: passed the verifier).
    :raises UsageError: bad strategy list, unknown merge strategy, best_score without a
        verifier, no model configured (ModelNotConfigured).
    """
    if not task or not task.strip():
        raise UsageError("task must not be empty; say what every member should do.")
    strategies = [s.strip() for s in (strategies or []) if s and s.strip()]
    if len(strategies) == 1:
        raise UsageError("an ensemble needs at least 2 strategies (or none, to let the model propose them); "
                         f"got only {strategies[0]!r}.")
    if len(set(map(str.casefold, strategies))) != len(strategies):
        raise UsageError("strategies must be different from each other; remove the duplicates.")
    if merge_strategy is not None and merge_strategy not in MERGE_STRATEGIES:
        raise UsageError(f"mergeStrategy {merge_strategy!r} is unknown; use one of {', '.join(MERGE_STRATEGIES)}.")
    verifier = verifier or default_verifier(host.workspace.root)
    if merge_strategy is None:
        merge_strategy = "best_score" if verifier else "llm_judge"
    if merge_strategy == "best_score" and not verifier:
        raise UsageError("mergeStrategy=best_score needs a verifier command (the project has no tests): "
                         "pass verifier=\"python -m pytest -q\" or another command that exits 0 on success.")
    from opensage import llm

    llm.model_name(model)  # ModelNotConfigured before anything is written
    emit = on_event or (lambda e: None)
    run_id = run_id or new_run_id()
    if not strategies:
        strategies = await propose_strategies(task, model)
    emit({"kind": "plan", "topology": "horizontal", "strategies": list(strategies), "run_id": run_id,
          "merge": merge_strategy})
    base = host.workspace.state_dir / "ensembles" / run_id
    member_tasks = [f"{task}\n\nApproach to take: {s}" for s in strategies]
    picks = await asyncio.gather(*(
        asyncio.to_thread(pick_agent, host, t, specialization=f"ensemble member using: {s}")
        for t, s in zip(member_tasks, strategies)
    ), return_exceptions=True)
    for p in picks:
        if isinstance(p, BaseException) and not isinstance(p, ModelError):
            raise p
    copies = []
    used: set[str] = set()
    for i, s in enumerate(strategies, 1):
        name = slug(s)
        if name in used:
            name = f"{name}-{i}"
        used.add(name)
        copies.append(await asyncio.to_thread(ScratchCopy.create, host.workspace.root, base / name))

    async def run_member(i: int) -> AgentResult:
        if isinstance(picks[i], ModelError):
            return AgentResult(agent=NO_AGENT, task=member_tasks[i], error=f"no agent for this strategy: {picks[i]}")
        spec = picks[i][0]
        emit({"kind": "agent", "member": i + 1, "agent": spec.name, "strategy": strategies[i], "reused": picks[i][1]})

        def member_event(e: dict, _i=i + 1) -> None:
            emit({**e, "member": _i})

        runner = AgentRunner(host, spec, root=copies[i].path, session=session, budget=budget or Budget(),
                             model=model, ask_policy=ask_policy, on_event=member_event)
        result = await runner.arun(member_tasks[i])
        await asyncio.to_thread(record_result, host, spec, result)
        return result

    results = await asyncio.gather(*(run_member(i) for i in range(len(strategies))))
    members = [
        MemberReport(i + 1, strategies[i], results[i].agent, not isinstance(picks[i], ModelError) and picks[i][1],
                     results[i], str(copies[i].path),
                     await asyncio.to_thread(copies[i].changes))
        for i in range(len(strategies))
    ]
    emit({"kind": "merge", "merge": merge_strategy})
    report = EnsembleReport(run_id, task, merge_strategy, members, None, "", False,
                            verifier=verifier if merge_strategy == "best_score" else None, directory=str(base))
    if merge_strategy == "best_score":
        timeout = (budget or Budget()).shell_timeout_s
        runs = await asyncio.gather(*(asyncio.to_thread(run_shell, verifier, c.path, timeout, host.workspace.root) for c in copies))
        for m, r in zip(members, runs):
            m.score = verifier_score(r.returncode, f"{r.stdout}\n{r.stderr}")
        best = max(members, key=lambda m: (m.score["passed_all"], m.result.success, -m.score["failed"],
                                           m.score["passed"], -m.index))
        report.chosen = best.index
        if best.score["passed_all"]:
            report.success = True
            report.reason = (f"member {best.index} ({best.strategy}) passes `{verifier}` "
                             f"({best.score['passed']} passed)")
            others = [m for m in members if m is not best and m.score["passed_all"]]
            if others:
                report.reason += f"; {len(others)} other member(s) also pass, the earliest/most-passing wins"
        else:
            report.reason = (f"no member passes `{verifier}`; closest is member {best.index} "
                             f"({best.score['failed']} failure(s)); nothing applied")
    elif merge_strategy == "majority_vote":
        finished = [m for m in members if m.result.success]
        if not finished:
            report.reason = "no member finished; nothing to vote on"
        else:
            votes = Counter(normalise_answer(m.result.output) for m in finished)
            top = max(votes.values())
            winner = next(m for m in finished if votes[normalise_answer(m.result.output)] == top)
            report.chosen, report.success = winner.index, True
            report.reason = f"{top} of {len(finished)} finished member(s) gave this answer"
            if top == 1 and len(finished) > 1:
                report.reason += " (no majority: every answer differs, the earliest member wins)"
    else:
        for m in members:
            m.diff = await asyncio.to_thread(copies[m.index - 1].diff, 3000)
        try:
            choice, reason, usage = await _judge(task, members, model)
        except ModelError as exc:
            report.reason = f"the judge gave no valid verdict ({exc}); nothing applied"
        else:
            report.merge_tokens, report.merge_cost_usd = usage.total_tokens, usage.cost_usd
            report.chosen, report.reason = choice, reason
            report.success = members[choice - 1].result.success
            if not report.success:
                report.reason += " (the chosen member did not finish; nothing applied)"
    if report.success and report.chosen:
        report.applied, report.conflicts = await asyncio.to_thread(copies[report.chosen - 1].apply)
    emit({"kind": "merged", "chosen": report.chosen, "success": report.success, "applied": report.applied})
    return report


# -- one entry for the coordinator (the run_topology hook) ---------------------------------
async def run_plan(host: "Host", topology: str, task: str, *, task_type: str | None = None,
                   subtasks: list[str] | None = None, strategies: list[str] | None = None,
                   merge_strategy: str | None = None, verifier: str | None = None, run_id: str | None = None,
                   session: "Session | None" = None, budget: "Budget | dict | None" = None,
                   model: str | None = None, ask_policy: Literal["allow", "deny"] = "deny",
                   on_event: Emit | None = None) -> dict[str, Any]:
    """Run ``task`` as one agent, a vertical chain or a horizontal ensemble; every agent run is
    announced (``agent_run_finished``).

    :param budget: a :class:`Budget`, or a dict of its fields (``steps``, ``max_cost_usd``
        USD...), or None for the defaults.
    :returns: ``{"success", "error", "failed_step", "results": [AgentResult], "agents": [name],
        "files_changed", "output", "detail", "tokens", "cost_usd"`` (merge spend only: agent
        spend is in ``results``)``, "subtasks", "strategies", "merge_strategy"}``.
    :raises ModelError: a plan (subtasks, strategies) could not be produced.
    """
    if isinstance(budget, dict):
        budget = Budget(**budget)
    emit = on_event or (lambda e: None)
    run_id = run_id or new_run_id()
    out: dict[str, Any] = {"success": False, "error": None, "failed_step": None, "results": [], "agents": [],
                           "files_changed": [], "output": "", "detail": {}, "tokens": 0, "cost_usd": 0.0,
                           "subtasks": subtasks, "strategies": strategies, "merge_strategy": merge_strategy}
    if topology == "vertical":
        chain = await vertical(host, task, subtasks, session=session, budget=budget, model=model,
                               ask_policy=ask_policy, run_id=run_id, on_event=emit)
        out.update(success=chain.success, failed_step=chain.failed_step, error=chain.reason,
                   results=[s.result for s in chain.steps], agents=[s.agent for s in chain.steps],
                   files_changed=chain.files_changed,
                   output=chain.steps[-1].result.output if chain.steps else "",
                   detail=chain.as_dict(), subtasks=chain.subtasks)
    elif topology == "horizontal":
        ens = await horizontal(host, task, strategies, merge_strategy, verifier=verifier,
                               session=session, budget=budget, model=model, ask_policy=ask_policy,
                               run_id=run_id, on_event=emit)
        out.update(success=ens.success, error=None if ens.success else ens.reason,
                   results=[m.result for m in ens.members], agents=[m.agent for m in ens.members],
                   files_changed=ens.applied, output=ens.answer, detail=ens.as_dict(),
                   tokens=ens.merge_tokens, cost_usd=ens.merge_cost_usd,
                   strategies=[m.strategy for m in ens.members], merge_strategy=ens.merge_strategy)
    else:
        try:
            spec, reused = await asyncio.to_thread(pick_agent, host, task, task_type=task_type)
        except ModelError as exc:
            result = AgentResult(agent=NO_AGENT, task=task, error=f"no agent for the task: {exc}")
            out.update(error=result.error, failed_step=1, results=[result], agents=[NO_AGENT],
                       detail={"topology": "single", "agent": None})
            return out
        emit({"kind": "agent", "step": 1, "agent": spec.name, "subtask": task, "reused": reused})
        scratch = await asyncio.to_thread(ScratchCopy.create, host.workspace.root,
                                          host.workspace.state_dir / "runs" / run_id / slug(spec.name, 30))
        runner = AgentRunner(host, spec, root=scratch.path, session=session, budget=budget or Budget(),
                             model=model, ask_policy=ask_policy,
                             on_event=lambda e: emit({**e, "step_index": 1}))
        result = await runner.arun(task)
        await asyncio.to_thread(record_result, host, spec, result, task_type)
        applied, conflicts = [], []
        if result.success:
            applied, conflicts = await asyncio.to_thread(scratch.apply)
            await asyncio.to_thread(scratch.remove)
        out.update(success=result.success, error=result.error, failed_step=None if result.success else 1,
                   results=[result], agents=[spec.name], output=result.output, files_changed=applied,
                   detail={"topology": "single", "agent": spec.name, "reused": reused,
                           "scratch": None if result.success and not scratch.kept else str(scratch.path),
                           "applied": applied, "conflicts": conflicts,
                           "refused": [{"path": p, "reason": r} for p, r in scratch.refused]})
        emit({"kind": "step_done", "step": 1, "agent": spec.name, "success": result.success,
              "applied": applied, "error": result.error})
    return out
