"""Running a generated tool in the sandbox by the execution protocol, and checking a new one.

Protocol (``docs/sandbox.md``): the tool reads ``{"arguments": {...}, "state": ...}`` on
standard input and prints ``{"result": ..., "state": ...}`` (``state`` optional) on
standard output. Anything else — non-zero exit, a kill, invalid JSON — is a failure.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opensage import sandbox
from opensage.errors import OpenSageError
from opensage.plugins.dynamic_tools.jobs import decode_output
from opensage.types import ToolSpec

#: Limits of a tool run (see :class:`opensage.sandbox.Limits` for units).
RUN_LIMITS = sandbox.Limits(cpu_s=10, memory_mb=1024, file_size_mb=64, open_files=256, processes=64,
                            wall_s=30.0, output_bytes=1_000_000)
#: Limits of the syntax check (``py_compile``, ``bash -n``, ``node --check``).
CHECK_LIMITS = sandbox.Limits(cpu_s=10, wall_s=20.0, output_bytes=100_000)


class ToolRunError(OpenSageError):
    """A generated tool failed: non-zero exit, killed, or output not by the protocol."""

    def __init__(self, message: str, run: sandbox.SandboxResult | None = None) -> None:
        super().__init__(message)
        self.run = run


@dataclass
class ToolOutput:
    result: Any
    state: Any
    has_state: bool
    run: sandbox.SandboxResult
    raw: dict = field(default_factory=dict)


#: Runs a Python tool with ``python -I -S``: site-packages go on ``sys.path`` directly,
#: without ``import site`` (which processes every ``.pth`` file and can cost ~80 ms on a
#: big environment). Packages that need a ``.pth`` hook (editable installs) are not seen.
_PY_LAUNCHER = (
    "import os,runpy,sys\n"
    "p=sys.argv[1]\n"
    "sys.argv=sys.argv[1:]\n"
    "sys.path.insert(0,os.path.dirname(p))\n"
    "sys.path.extend({paths!r})\n"
    "runpy.run_path(p,run_name='__main__')\n"
)


def python_argv(code_path: Path) -> list[str]:
    """``python -I -S`` + the launcher + the tool file (see :data:`_PY_LAUNCHER`)."""
    import site

    return [sys.executable, "-I", "-S", "-c", _PY_LAUNCHER.format(paths=list(site.getsitepackages())), str(code_path)]


def command_for(spec: ToolSpec, code_path: Path) -> list[str]:
    """The argv that runs the tool's code file."""
    if spec.language == "python":
        return python_argv(code_path)
    if spec.language == "bash":
        return ["bash", str(code_path)]
    return ["node", str(code_path)]


def run_tool(spec: ToolSpec, code_path: Path, arguments: dict, state: Any = None, *,
             limits: sandbox.Limits | None = None, config=None) -> ToolOutput:
    """Run the tool once in the sandbox.

    :raises ToolRunError: the run failed (the message holds the reason and stderr tail).
    :raises SandboxError: no sandbox level is allowed.
    """
    request = json.dumps({"arguments": arguments, "state": state})
    res = sandbox.run(command_for(spec, code_path), stdin=request, readable=[code_path.parent],
                      limits=limits or RUN_LIMITS, config=config)
    return decode_run(res)


def decode_run(res: sandbox.SandboxResult) -> ToolOutput:
    """The :class:`ToolOutput` of a finished sandbox run (its stdout is the tool's JSON answer).

    :raises ToolRunError: the run timed out, was cut at the output limit, exited non-zero,
        or printed no valid answer; the message carries the tail of its output.
    """
    if res.timed_out or res.truncated or res.returncode != 0:
        raise ToolRunError(f"tool failed ({res.describe()}, sandbox level {res.level}): {_tail(res.stderr) or _tail(res.stdout)}", res)
    try:
        out = decode_output(res.stdout)
    except ValueError as exc:
        raise ToolRunError(f"tool output is invalid: {exc}", res) from None
    return ToolOutput(out["result"], out.get("state"), "state" in out, res, out)


def _tail(text: str, n: int = 1500) -> str:
    text = text.strip()
    return text if len(text) <= n else "..." + text[-n:]


def syntax_check(spec: ToolSpec, code_path: Path, config=None) -> None:
    """``py_compile`` / ``bash -n`` / ``node --check`` in the sandbox. Raises ToolRunError."""
    if spec.language == "python":
        argv = [sys.executable, "-I", "-S", "-c",
                "import py_compile,sys; py_compile.compile(sys.argv[1], cfile='/tmp/c.pyc', doraise=True)",
                str(code_path)]
    elif spec.language == "bash":
        argv = ["bash", "-n", str(code_path)]
    else:
        argv = ["node", "--check", str(code_path)]
    res = sandbox.run(argv, readable=[code_path.parent], limits=CHECK_LIMITS, config=config)
    if not res.ok:
        raise ToolRunError(f"syntax check failed ({' '.join(argv[:2])}): {_tail(res.stderr) or _tail(res.stdout)}", res)


_DEP_CHECK = {
    "python": (lambda deps: [sys.executable, "-I", "-S", "-c",
                             "import importlib.util,sys\n"
                             "sys.path.extend(%r)\n"
                             "m=[d for d in sys.argv[1:] if importlib.util.find_spec(d) is None]\n"
                             "print(' '.join(m)); sys.exit(1 if m else 0)" % (_site_dirs(),), *deps]),
    "node": (lambda deps: ["node", "-e",
                           "const m=process.argv.slice(1).filter(d=>{try{require.resolve(d);return false}catch(e){return true}});"
                           "console.log(m.join(' '));process.exit(m.length?1:0)", *deps]),
    "bash": (lambda deps: ["bash", "-c", 'm=""; for c in "$@"; do command -v "$c" >/dev/null || m="$m $c"; done;'
                           ' echo $m; [ -z "$m" ]', "deps", *deps]),
}


def _site_dirs() -> list[str]:
    import site

    return list(site.getsitepackages())


def dependency_check(spec: ToolSpec, config=None) -> None:
    """Every declared dependency is importable (python/node) or a command (bash) in the sandbox.

    Nothing is installed: a tool may only use what the environment already has.
    :raises ToolRunError: naming the missing ones.
    """
    if not spec.dependencies:
        return
    res = sandbox.run(_DEP_CHECK[spec.language](spec.dependencies), limits=CHECK_LIMITS, config=config)
    if not res.ok:
        missing = res.stdout.strip() or _tail(res.stderr)
        raise ToolRunError(
            f"declared dependencies not available in the sandbox: {missing}. Use only the standard library "
            "or what is already installed; opensage does not install packages for generated tools.", res)


def same(expected: Any, actual: Any) -> bool:
    """JSON equality; numbers compare with a relative tolerance of 1e-9 (ints == floats)."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual if isinstance(expected, bool) and isinstance(actual, bool) else False
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return math.isclose(expected, actual, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(same(expected[k], actual[k]) for k in expected)
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(same(a, b) for a, b in zip(expected, actual))
    return expected == actual


def check_examples(spec: ToolSpec, code_path: Path, config=None) -> list[dict[str, Any]]:
    """Run every example call; returns what each gave. Raises ToolRunError on the first failure."""
    checked = []
    for i, ex in enumerate(spec.examples):
        started = time.time()
        try:
            out = run_tool(spec, code_path, ex.arguments, ex.state, config=config)
        except ToolRunError as exc:
            raise ToolRunError(f"example {i + 1} {json.dumps(ex.arguments)}: {exc}", exc.run) from None
        if not same(ex.expected, out.result):
            raise ToolRunError(
                f"example {i + 1} {json.dumps(ex.arguments)}: expected result {json.dumps(ex.expected)}, "
                f"got {json.dumps(out.result)}" + (f"; stderr: {_tail(out.run.stderr, 500)}" if out.run.stderr.strip() else ""),
                out.run,
            )
        checked.append({"arguments": ex.arguments, "state": ex.state, "expected": ex.expected, "result": out.result,
                        "durationMs": round(out.run.duration_ms, 1), "level": out.run.level, "checkedAt": started})
    return checked
