"""Coordinated runs in graph memory (the ``remember_run`` hook)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opensage.host import Host

__all__ = ["remember_run"]


def remember_run(host: "Host", report: Any) -> dict[str, str]:
    """Write a coordinated run to graph memory in one transaction; returns ``{role: node id}``.

    ``report`` is the coordinator's ``RunReport`` (read by attribute: ``run_id``, ``plan``
    with ``task``/``task_type``/``topology``/``steps``/``strategies``/``merge_strategy``/
    ``analysis.complexity``/``text()``, ``success``, ``output``, ``error``, ``tokens``,
    ``cost_usd`` USD, ``latency_ms`` ms, ``files_changed``, ``failed_step``, ``agents``, ``results``).

    Nodes: ``task`` (label = the task text, cut to 200 characters), ``plan`` and
    ``outcome`` (label ``<kind> <run-id>``), one ``agent`` per agent, one ``file`` per
    changed file. Edges: task -planned_as-> plan, plan -uses-> agent, plan -produced->
    outcome, agent -contributed_to-> outcome, outcome -touches-> file.
    """
    from opensage.plugins.graph_memory.graph import graph_for
    from opensage.types import NO_AGENT

    graph = graph_for(host)
    plan = report.plan
    ids: dict[str, str] = {}
    with host.db.transaction():
        task_label = plan.task if len(plan.task) <= 200 else plan.task[:197] + "..."
        task, _ = graph.upsert_node("task", task_label, plan.task,
                                    {"taskType": plan.task_type, "complexity": plan.analysis.complexity,
                                     "lastRun": report.run_id})
        plan_node, _ = graph.upsert_node("plan", f"plan {report.run_id}", plan.text(),
                                         {"topology": plan.topology, "runId": report.run_id,
                                          "steps": plan.steps, "strategies": plan.strategies,
                                          "mergeStrategy": plan.merge_strategy})
        outcome_text = (f"{'succeeded' if report.success else 'failed'}: "
                        f"{(report.output if report.success else report.error or '')[:1000]}")
        outcome, _ = graph.upsert_node("outcome", f"outcome {report.run_id}", outcome_text, {
            "success": report.success, "tokens": report.tokens, "costUsd": report.cost_usd,
            "latencyMs": report.latency_ms, "filesChanged": report.files_changed,
            "failedStep": report.failed_step, "runId": report.run_id,
        })
        graph.upsert_edge(task.id, plan_node.id, "planned_as", 1.0, {"runId": report.run_id})
        graph.upsert_edge(plan_node.id, outcome.id, "produced", 1.0)
        ids.update(task=task.ref, plan=plan_node.ref, outcome=outcome.ref)
        for i, (name, result) in enumerate(zip(report.agents, report.results), 1):
            if name == NO_AGENT:
                continue
            agent, _ = graph.upsert_node("agent", name, "", {"lastRun": report.run_id})
            graph.upsert_edge(plan_node.id, agent.id, "uses", 1.0, {"position": i, "task": result.task[:300]})
            graph.upsert_edge(agent.id, outcome.id, "contributed_to", 1.0 if result.success else 0.2,
                              {"success": result.success, "error": result.error, "tokens": result.tokens})
            ids[f"agent:{name}"] = agent.ref
        for path in report.files_changed:
            node, _ = graph.upsert_node("file", path, "", {"lastRun": report.run_id})
            graph.upsert_edge(outcome.id, node.id, "touches", 1.0)
            ids[f"file:{path}"] = node.ref
    return ids
