"""Wall time per host event: the Claude Code hook path and the OpenCode shim's path.

Target (issue 10, item 6): median <= 50 ms per host event on this machine.

* **Claude Code** runs the installed hook command once per event, through a shell, with
  the event's JSON on stdin and ``CLAUDE_PROJECT_DIR`` set. Timed here exactly so: the
  command ``opensage install claude`` wrote into ``.claude/settings.json`` for that
  event, run by ``sh -c``, with the scripts installed next to this Python first on PATH
  (as an activated virtualenv puts them; under pyenv, ``which`` would find pyenv's
  shim, a shell script adding ~60-100 ms that is pyenv's cost, not ours). Tool results
  and stops are queued by ``sh`` alone; prompts, session start, compaction and end run
  ``opensage-hook`` against the warm hook server (the first event starts it; that cold
  event is reported on its own row, and the old direct path, one ``opensage hook
  --from claude`` process per event, on another for comparison).
* **OpenCode**: the shim keeps one ``opensage hook --from opencode`` process per
  OpenCode process and writes one batch line per pile of events. Timed here: one event
  per batch, from writing the line to reading its answer (the shim's round trip).
  ``chat.message`` waits for this answer (it brings the prompt's memory back); the
  other hooks only queue. When node is installed, the installed shim itself is also
  driven under node with the same events, timing how long each hook call keeps
  OpenCode waiting (``host waits`` rows; the time until the events are recorded is the
  round trip above).

Each session is a realistic mix: start, a prompt, 12 tool calls (with results), the
answer, a compaction and the end, 5 sessions per host, in a workspace holding the code
graph of opensage's graph-memory plugin (so prompt memory searches a real graph).
Compaction and session end compress the session (the slow, rare events) and count in
the median and p95 like any other. Nothing here is tuned: one set, no held-out split.
The floor row (a shell starting this Python with nothing to do) shows what any Python
hook costs on the machine at that moment: on a shared, loaded machine it moves with the
load, and so does everything else.

    python bench/hooks.py [--sessions 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOOLS = [
    ("Bash", {"command": "python -m pytest -q tests/test_auth.py", "description": "Run the auth tests"},
     {"stdout": "F.\nFAILED tests/test_auth.py::test_refresh - KeyError: 'exp'\n1 failed, 1 passed in 0.12s",
      "stderr": "", "interrupted": False, "isImage": False}),
    ("Read", {"file_path": "src/auth.py"}, {"type": "text", "file": {"filePath": "src/auth.py",
                                                                     "content": "def refresh(claims):\n    return claims['exp']\n"}}),
    ("Edit", {"file_path": "src/auth.py", "old_string": "claims['exp']", "new_string": "claims.get('exp')"},
     {"filePath": "src/auth.py", "structuredPatch": []}),
    ("Grep", {"pattern": "def compress_session", "path": "opensage"}, {"filenames": ["opensage/x.py"], "numFiles": 1}),
]
PROMPTS = ["why does the refresh token test fail with KeyError exp?", "how is compress_session called?",
           "let us use RS256 for the JWT signer", "where are episodes ranked?", "fix the failing auth test"]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def claude_events(session: str, i: int, project: Path) -> list[dict]:
    base = {"session_id": session, "transcript_path": str(project / "t.jsonl"), "cwd": str(project),
            "permission_mode": "default"}
    events = [{**base, "hook_event_name": "SessionStart", "source": "startup"},
              {**base, "hook_event_name": "UserPromptSubmit", "prompt": PROMPTS[i % len(PROMPTS)]}]
    for k in range(12):
        name, tool_input, response = TOOLS[k % len(TOOLS)]
        events.append({**base, "hook_event_name": "PostToolUse", "tool_name": name, "tool_input": tool_input,
                       "tool_response": response, "tool_use_id": f"toolu_{i}_{k}"})
    events += [{**base, "hook_event_name": "Stop", "stop_hook_active": False,
                "last_assistant_message": "Fixed the KeyError: 'exp' in src/auth.py: refresh() now uses claims.get."},
               {**base, "hook_event_name": "PreCompact", "trigger": "manual", "custom_instructions": ""},
               {**base, "hook_event_name": "SessionEnd", "reason": "other"}]
    return events


def opencode_events(session: str, i: int) -> list[dict]:
    events = [{"hook": "session-start", "payload": {"session_id": session}},
              {"hook": "user-message", "payload": {"session_id": session, "text": PROMPTS[i % len(PROMPTS)]}}]
    for k in range(12):
        name, tool_input, response = TOOLS[k % len(TOOLS)]
        call = f"call_{i}_{k}"
        events.append({"hook": "tool-call", "payload": {"session_id": session, "tool": name.lower(), "args": tool_input,
                                                        "call_id": call}})
        events.append({"hook": "tool-result", "payload": {"session_id": session, "tool": name.lower(),
                                                          "text": json.dumps(response), "call_id": call}})
    events += [{"hook": "assistant-message", "payload": {"session_id": session,
                                                         "text": "Fixed the KeyError: 'exp' in src/auth.py."}},
               {"hook": "compact", "payload": {"session_id": session}},
               {"hook": "session-end", "payload": {"session_id": session}}]
    return events


SHIM_DRIVER = r"""
const plugin = (await import(process.argv[2])).default
const sessions = Number(process.argv[4])
const hooks = await plugin.server({ directory: process.argv[3] })
const times = {}
const time = async (name, fn) => {
  const t0 = process.hrtime.bigint()
  await fn()
  ;(times[name] ||= []).push(Number(process.hrtime.bigint() - t0) / 1e6)
}
for (let i = 0; i < sessions; i++) {
  const sid = `ses_node_${i}`
  await time("session.created", () => hooks.event({ event: { type: "session.created", properties: { sessionID: sid, info: { id: sid } } } }))
  await time("chat.message", () => hooks["chat.message"]({ sessionID: sid }, { message: {}, parts: [{ type: "text", text: "why does the refresh token test fail?" }] }))
  for (let k = 0; k < 12; k++)
    await time("tool.execute.after", () => hooks["tool.execute.after"]({ tool: "bash", sessionID: sid, callID: `c${i}_${k}`, args: { command: "pytest -q" } }, { title: "", output: "1 failed", metadata: {} }))
  await time("session.idle", () => hooks.event({ event: { type: "session.idle", properties: { sessionID: sid } } }))
  await time("session.compacting", () => hooks["experimental.session.compacting"]({ sessionID: sid }, { context: [] }))
}
await time("dispose", () => hooks.dispose())
console.log(JSON.stringify(times))
"""


def shim_times(project: Path, sessions: int, env: dict) -> dict[str, list[float]] | None:
    """How long each hook of the installed OpenCode shim keeps the host waiting (ms), under node."""
    import shutil

    if shutil.which("node") is None:
        return None
    shim = project / ".opencode" / "plugin" / "opensage.js"
    driver = project.parent / "driver.mjs"
    driver.write_text(SHIM_DRIVER)
    r = subprocess.run(["node", str(driver), shim.as_uri(), str(project), str(sessions)], capture_output=True,
                       text=True, env=env, timeout=600)
    if r.returncode != 0:
        sys.exit(f"shim driver failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=5)
    args = ap.parse_args()
    bindir = Path(sys.executable).parent
    hook_script = bindir / "opensage-hook"
    if not hook_script.is_file():
        sys.exit(f"no opensage-hook next to {sys.executable}: install opensage (pip install -e .) first.")
    opensage = [str(bindir / "opensage")] if (bindir / "opensage").is_file() else [sys.executable, "-m", "opensage"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        subprocess.run([*opensage, "--workspace", str(project), "@memory-ingest",
                        f"path={REPO / 'opensage' / 'plugins' / 'graph_memory'}"], check=True, capture_output=True)
        env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
               "CLAUDE_PROJECT_DIR": str(project), "OPENSAGE_HOOKD_IDLE_S": "120"}
        subprocess.run([*opensage, "--workspace", str(project), "install", "claude"], check=True, capture_output=True,
                       env=env)
        settings = json.loads((project / ".claude" / "settings.json").read_text())
        installed = {event: groups[-1]["hooks"][-1]["command"] for event, groups in settings["hooks"].items()}

        def claude_once(event: dict, command: str | None = None) -> float:
            command = command or installed[event["hook_event_name"]]
            t0 = time.perf_counter()
            r = subprocess.run(["sh", "-c", command], input=json.dumps(event), capture_output=True, text=True, env=env)
            ms = (time.perf_counter() - t0) * 1000
            if r.returncode != 0:
                sys.exit(f"hook failed ({event['hook_event_name']}): {r.stderr}")
            return ms

        # Claude: the first event finds no server (direct path + server start), then warm
        sessions = [claude_events(f"claude-{i}", i, project) for i in range(args.sessions)]
        cold = claude_once(sessions[0][0])
        from opensage.integrations.hookd import wait_for_server

        if not wait_for_server(str(project), 30):
            sys.exit("the hook server did not start")
        claude_ms, claude_by = [], {}
        for s in sessions:
            for e in s[1:]:
                ms = claude_once(e)
                claude_ms.append(ms)
                claude_by.setdefault(e["hook_event_name"], []).append(ms)
        # the floor on this machine right now: a shell starting this Python and nothing else
        floor_ms = []
        for _ in range(20):
            t0 = time.perf_counter()
            subprocess.run(["sh", "-c", f"{sys.executable} -c pass"], capture_output=True, env=env)
            floor_ms.append((time.perf_counter() - t0) * 1000)
        direct_cmd = f"{opensage[0] if len(opensage) == 1 else ' '.join(opensage)} hook --from claude"
        direct_ms = [claude_once(e, direct_cmd) for e in claude_events("claude-direct", 0, project)[1:6]]

        # OpenCode: one long-lived process, one event per batch
        proc = subprocess.Popen([*opensage, "--workspace", str(project), "hook", "--from", "opencode"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        opencode_ms = []
        slow: dict[str, list[float]] = {}
        for i in range(args.sessions):
            for event in opencode_events(f"ses_{i}", i):
                t0 = time.perf_counter()
                proc.stdin.write(json.dumps({"events": [event]}) + "\n")
                proc.stdin.flush()
                answer = json.loads(proc.stdout.readline())
                ms = (time.perf_counter() - t0) * 1000
                if not answer["results"][0].get("ok"):
                    sys.exit(f"opencode event failed: {answer}")
                opencode_ms.append(ms)
                slow.setdefault(event["hook"], []).append(ms)
        proc.stdin.close()
        proc.wait(timeout=60)
        subprocess.run([*opensage, "--workspace", str(project), "install", "opencode"], check=True,
                       capture_output=True, env=env)
        node = shim_times(project, args.sessions, env)

    def row(name, values):
        rows.append((name, len(values), statistics.median(values), pct(values, 0.95)))

    row("claude: installed hook commands (server warm)", claude_ms)
    for event in ("UserPromptSubmit", "PostToolUse", "Stop", "PreCompact", "SessionEnd"):
        row(f"  claude {event}", claude_by[event])
    row("floor: sh -c 'python -c pass' (no opensage)", floor_ms)
    row("claude: old direct path (opensage hook --from claude)", direct_ms)
    row("opencode: shim batch round trip", opencode_ms)
    for hook in ("user-message", "tool-call", "compact", "session-end"):
        row(f"  opencode {hook}", slow[hook])
    if node:
        row("opencode: host waits, installed shim under node", [t for name, ts in node.items() if name != "dispose"
                                                                for t in ts])
        for name in ("chat.message", "tool.execute.after", "session.compacting"):
            row(f"  shim {name}", node[name])
    print(f"{'path':<56} {'events':>6} {'median ms':>10} {'p95 ms':>8}")
    for name, n, med, p95 in rows:
        print(f"{name:<56} {n:>6} {med:>10.1f} {p95:>8.1f}")
    print(f"claude: first event, no server running (direct path, starts the server): {cold:.1f} ms")
    print(json.dumps({
        "bench": "hooks", "sessions": args.sessions,
        "claude_median_ms": round(statistics.median(claude_ms), 1), "claude_p95_ms": round(pct(claude_ms, 0.95), 1),
        "claude_cold_ms": round(cold, 1), "python_floor_median_ms": round(statistics.median(floor_ms), 1), "claude_direct_median_ms": round(statistics.median(direct_ms), 1),
        "opencode_median_ms": round(statistics.median(opencode_ms), 1),
        "opencode_p95_ms": round(pct(opencode_ms, 0.95), 1),
        **({"opencode_shim_wait_median_ms": round(statistics.median([t for n, ts in node.items() if n != "dispose"
                                                                     for t in ts]), 2)} if node else {}),
        "target_median_ms": 50,
        "ok": statistics.median(claude_ms) <= 50 and statistics.median(opencode_ms) <= 50,
    }))


if __name__ == "__main__":
    main()
