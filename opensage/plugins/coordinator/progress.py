"""Live progress and the final report of ``opensage run`` (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from opensage.termsafe import clean

__all__ = ["RunProgress", "report_table", "changes_table"]


def _t(value: Any, style: str | None = None) -> Text:
    """Untrusted text (task, model output, file names) for rich: controls escaped, no markup."""
    return Text(clean(value), style=style or "")


class RunProgress:
    """An ``on_event`` callback that keeps the run's state and renders it.

    Shows the plan, the current step, one row per agent (step n/max, last tool,
    tokens, cost USD, status) and running totals. Pass ``live`` (a ``rich.live.Live``)
    to refresh the display on every event, or ``lines`` (a ``rich.console.Console``,
    for a pipe or log file where a live display cannot redraw) to print one plain line
    per event as it happens.
    """

    def __init__(self, task: str, live: Any = None, lines: Any = None) -> None:
        self.task = task
        self.live = live
        self.lines = lines
        self.phase = "analysing the task"
        self.plan = None
        self.base_tokens = 0
        self.base_cost = 0.0
        self.rows: dict[Any, dict[str, Any]] = {}
        self.current = ""

    def _key(self, e: dict) -> Any:
        if "member" in e:
            return ("member", e["member"])
        return ("step", e.get("step_index") or e.get("step") or 1)

    def __call__(self, e: dict) -> None:
        kind = e.get("kind")
        if kind == "planned":
            self.plan = e["plan"]
            self.base_tokens += int(e.get("tokens") or 0)
            self.base_cost += float(e.get("cost_usd") or 0.0)
            self.phase = f"running ({self.plan.topology})"
        elif kind == "plan":
            items = e.get("steps") or e.get("strategies") or []
            self.phase = f"{e.get('topology')}: {len(items)} agent(s)"
        elif kind == "replan":
            self.phase = f"re-planned after step {e.get('step')} failed"
        elif kind == "agent":
            key = ("member", e["member"]) if "member" in e else ("step", e.get("step", 1))
            self.rows[key] = {"agent": e["agent"], "what": e.get("strategy") or e.get("subtask") or "",
                              "step": 0, "max": "?", "tool": "", "tokens": 0, "cost": 0.0,
                              "status": "reused" if e.get("reused") else "generated"}
            self.current = f"{key[0]} {key[1]}: @{e['agent']}"
        elif kind in ("step", "tool", "done"):
            row = self.rows.setdefault(self._key(e), {"agent": e.get("agent", "?"), "what": "", "step": 0, "max": "?",
                                                      "tool": "", "tokens": 0, "cost": 0.0, "status": ""})
            if kind == "step":
                row.update(step=e["step"], max=e.get("max_steps", "?"), tokens=e.get("tokens", 0),
                           cost=e.get("cost_usd", 0.0), status="thinking")
            elif kind == "tool":
                args = e.get("arguments") or {}
                hint = args.get("path") or args.get("command") or args.get("query") or ""
                row.update(tool=f"{e['tool']} {str(hint)[:40]}".strip(), status="tool")
            else:
                row.update(tokens=e.get("tokens", 0), cost=e.get("cost_usd", 0.0),
                           status="done" if e.get("success") else f"failed: {e.get('error') or ''}"[:60])
        elif kind == "retry":
            note = (f"model call {e.get('error')} (attempt {e.get('attempt')} of {e.get('attempts')}); "
                    f"retrying in {e.get('wait_s')} s")
            if "agent" in e:
                row = self.rows.get(self._key(e))
                if row is not None:
                    row["status"] = note[:60]
            else:
                self.phase = note
        elif kind == "merge":
            self.phase = f"merging ({e.get('merge')})"
        elif kind == "merged":
            self.phase = f"merged: chose member {e.get('chosen') or 'none'}"
        elif kind == "finished":
            self.phase = "finished" if e.get("success") else "finished with a failure"
        if self.live is not None:
            self.live.update(self.render())
        if self.lines is not None:
            line = self.describe(e)
            if line:
                self.lines.print(Text(line), soft_wrap=True)

    def describe(self, e: dict) -> str | None:
        """One plain line for event ``e`` (None for events that add nothing to a log)."""
        kind = e.get("kind")
        who = ""
        if "agent" in e and kind not in ("planned", "plan", "analysing"):
            key = self._key(e) if kind != "agent" else (("member", e["member"]) if "member" in e
                                                       else ("step", e.get("step", 1)))
            who = f"[{key[0][0]}{key[1]} @{e['agent']}] "
        if kind == "analysing":
            return "[run] analysing the task"
        if kind == "planned":
            return f"[run] plan: {self.plan.topology} — {self.plan.reason}" if self.plan is not None else None
        if kind == "plan":
            return f"[run] {self.phase}"
        if kind == "replan":
            return f"[run] {self.phase}"
        if kind == "agent":
            what = str(e.get("strategy") or e.get("subtask") or "")[:80]
            return f"{who}{'reused' if e.get('reused') else 'generated'}: {what}"
        if kind == "step":
            return (f"{who}model call {e['step']}/{e.get('max_steps', '?')} "
                    f"({e.get('tokens', 0)} tokens, ${float(e.get('cost_usd') or 0):.4f})")
        if kind == "tool":
            return f"{who}tool {self.rows.get(self._key(e), {}).get('tool') or e.get('tool')}"
        if kind == "retry":
            return (f"{who or '[run] '}model call {e.get('error')} (attempt {e.get('attempt')} of "
                    f"{e.get('attempts')}); retrying in {e.get('wait_s')} s")
        if kind == "done":
            return f"{who}{'done' if e.get('success') else 'failed: ' + str(e.get('error') or '')[:200]}"
        if kind in ("merge", "merged", "finished"):
            return f"[run] {self.phase}"
        return None

    @property
    def tokens(self) -> int:
        """Tokens so far: those before the live rows plus each agent row's."""
        return self.base_tokens + sum(int(r["tokens"] or 0) for r in self.rows.values())

    @property
    def cost(self) -> float:
        """Spend so far in USD: that before the live rows plus each agent row's."""
        return self.base_cost + sum(float(r["cost"] or 0.0) for r in self.rows.values())

    def render(self):
        """The live panel (a rich renderable): task, phase, current step, the plan and one row
        per agent (state, tokens, USD), with every model-written text cleaned of escapes.
        """
        head = Text()
        head.append("task: ", style="bold")
        head.append(clean(self.task) + "\n")
        head.append("phase: ", style="bold")
        head.append(clean(self.phase))
        if self.current:
            head.append("\ncurrent: ", style="bold")
            head.append(clean(self.current))
        parts: list[Any] = [head]
        if self.plan is not None:
            parts.append(_t(self.plan.text(), style="cyan"))
        if self.rows:
            table = Table(box=None, pad_edge=False)
            for col in ("#", "agent", "task / strategy", "step", "last tool", "tokens", "cost $", "status"):
                table.add_column(col)
            for (kind, n), r in sorted(self.rows.items(), key=lambda kv: (kv[0][0], kv[0][1])):
                table.add_row(f"{kind[0]}{n}", _t(f"@{r['agent']}"), _t(str(r["what"])[:50]),
                              f"{r['step']}/{r['max']}", _t(r["tool"]), str(r["tokens"]), f"{r['cost']:.4f}",
                              _t(r["status"]))
            parts.append(table)
        parts.append(Text(f"total: {self.tokens} tokens, ${self.cost:.4f}", style="bold"))
        return Panel(Group(*parts), title="opensage run", border_style="blue")


def report_table(report) -> Table:
    """The final report of a :class:`~opensage.plugins.coordinator.coordinator.RunReport`."""
    table = Table(title=f"opensage run {report.run_id}", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    plan = report.plan
    table.add_row("plan", _t(f"{plan.topology} — {plan.reason}"))
    if plan.steps:
        table.add_row("steps", _t("\n".join(f"{i}. {s}" for i, s in enumerate(plan.steps, 1))))
    if plan.strategies:
        table.add_row("strategies", _t("\n".join(f"{i}. {s}" for i, s in enumerate(plan.strategies, 1))))
        table.add_row("merge", _t(f"{plan.merge_strategy}" + (f" (verifier: {plan.verifier})" if plan.verifier else "")))
    if not report.executed:
        table.add_row("result", "plan only: nothing was run")
        table.add_row("tokens / cost", f"{report.tokens} / ${report.cost_usd:.4f}")
        return table
    table.add_row("result", Text("success", style="green") if report.success else Text("FAILED", style="red"))
    if report.error:
        table.add_row("why", _t(report.error))
    for i, r in enumerate(report.results, 1):
        state = "ok" if r.success else f"failed: {r.error}"
        table.add_row(f"agent {i}", _t(f"@{r.agent}: {state}; {r.steps} model call(s), {r.tokens} tokens, "
                                       f"${r.cost_usd:.4f}, {r.latency_ms / 1000:.1f} s"))
    table.add_row("files changed", _t(", ".join(report.files_changed) or "none"))
    refused = (report.detail or {}).get("refused") or []
    if refused:
        table.add_row("refused", _t("\n".join(f"{r['path']}: {r['reason']}" for r in refused), style="red"))
    table.add_row("tokens / cost", f"{report.tokens} / ${report.cost_usd:.4f}")
    table.add_row("time", f"{report.latency_ms / 1000:.1f} s")
    if report.memory:
        table.add_row("memory", ", ".join(f"{k}={v}" for k, v in list(report.memory.items())[:6]))
    if report.output:
        table.add_row("output", _t(report.output.strip()[:2000]))
    return table


def changes_table(rows: list[dict[str, Any]], where: str) -> Table:
    """The summary of an agent's changes (rows of ``ScratchCopy.summary()``) before they are applied."""
    table = Table(title=_t(f"changes in {where}"), box=None, pad_edge=False)
    for col in ("", "file", "+", "-", "note"):
        table.add_column(col)
    for r in rows:
        mark = {"added": "A", "modified": "M", "deleted": "D"}[r["change"]]
        note = _t(f"refused: {r['refused']}", style="red") if r["refused"] else _t("")
        table.add_row(mark, _t(r["path"]), str(r["added"]), str(r["removed"]), note)
    return table
