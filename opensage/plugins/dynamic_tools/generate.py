"""``@generate-tool``: the model writes a tool; it is registered only if it passes its checks.

Loop (after LATM / CREATOR: run the tool on its own example calls, feed failures back):
ask for a :class:`~opensage.types.ToolSpec` (structured output) -> syntax check ->
dependency check -> run every example in the sandbox and compare with its expected
result. A failure goes back to the model with the error and output; after
``attempts`` failed candidates the command fails, shows the last failure and writes
nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from opensage.errors import ModelError, UsageError
from opensage.plugins.dynamic_tools import store
from opensage.plugins.dynamic_tools.runner import ToolRunError, check_examples, dependency_check, syntax_check
from opensage.types import ToolDraft, ToolSpec
from opensage.types._tools import TOOL_NAME

PROTOCOL = """\
Execution protocol (mandatory):
- The program reads ONE JSON object from standard input: {"arguments": {...}, "state": <JSON or null>}.
- It prints ONE JSON object on standard output: {"result": <JSON value>} and, if it keeps state
  between calls, also "state": <new JSON state>. Print nothing else on standard output
  (diagnostics go to standard error).
- It runs in a sandbox: no network, no access to the user's files, a private /tmp, a clean
  environment, {limits}. Use only the standard library of the language (bash: coreutils and
  python3 for JSON), or list what you need in "dependencies" — nothing will be installed.
Language notes:
- python: a script run as `python tool.py` (json.load(sys.stdin), print(json.dumps(...))).
- bash: a script run as `bash tool.sh`; parse JSON with `python3 -c` or jq if listed in dependencies.
- node: a CommonJS script run as `node tool.js` (read all of stdin, then JSON.parse).
Give 1-5 "examples": each {"arguments": {...}, "state": null, "expected": <the exact "result" value>}.
They are run before the tool is accepted; the tool is rejected if any result differs.
"parameters" is a JSON Schema object: {"type": "object", "properties": {"name": {"type":
"string|integer|number|boolean|array|object", "description": "..."}}, "required": [...]}
(JSON Schema Draft 2020-12, or Draft 7 with "$schema"). Constraints such as minimum,
maximum, pattern, enum and items are enforced on every call; the examples must satisfy them.
"""


def check_schema(spec: ToolSpec) -> None:
    """Reject a candidate whose ``parameters`` is not a valid JSON Schema, or whose examples break it.

    :raises ToolRunError: the schema error or the first example that does not match
        (a rejection reason the model sees, like a failing example).
    """
    from opensage.plugins.dynamic_tools.schema import check_arguments, parameters_validator

    try:
        parameters_validator(spec.parameters)
        for i, ex in enumerate(spec.examples):
            try:
                check_arguments(spec, ex.arguments)
            except UsageError as exc:
                raise UsageError(f"example {i + 1} {json.dumps(ex.arguments)} does not match the parameters: {exc}") from None
    except UsageError as exc:
        raise ToolRunError(str(exc)) from None


@dataclass
class Generated:
    tool: store.StoredTool
    attempts: int
    checked: list[dict]
    failures: list[str]


def _messages(requirement: str, name: str, language: str) -> list[dict]:
    from opensage.plugins.dynamic_tools.runner import RUN_LIMITS as L

    limits = f"{L.cpu_s} s CPU, {L.memory_mb} MiB memory, {L.wall_s:g} s wall clock"
    return [
        {"role": "system", "content": "You write small, correct command-line tools for a coding assistant.\n"
                                      + PROTOCOL.replace("{limits}", limits)},
        {"role": "user", "content": f"Write a {language} tool named {name!r}.\nRequirement: {requirement}"},
    ]


def generate(host, requirement: str, language: str, name: str, attempts: int = 3, replace: bool = False) -> Generated:
    """Generate, check and register a tool. See the module docstring.

    :raises UsageError: bad name, or it collides with a command / an existing tool
        (without ``replace``) — raised before the model is called.
    :raises ModelError: every candidate failed; the message shows each failure.
    :raises SandboxError: no sandbox level allowed (nothing can be checked).
    """
    from opensage import llm, sandbox

    if not re.match(TOOL_NAME, name or "") or len(name) > 48:
        raise UsageError(f"tool name {name!r} must be kebab-case, at most 48 characters, e.g. 'csv-summary'")
    store.tool_folder(host.workspace, name)
    existing = host.commands.get(name)
    stored = (store.tool_folder(host.workspace, name) / store.SPEC_FILE).is_file()
    if existing is not None and not stored:
        raise UsageError(f"tool name {name!r} collides with the command @{name} (from {existing.plugin}); choose another name")
    if stored and not replace:
        raise UsageError(f"a generated tool @{name} exists already; pass replace=true to regenerate it")
    config = sandbox.load_config(host.workspace.root)
    sandbox.available_level(config)  # refuse early, with the reason, if nothing can run tools

    messages = _messages(requirement, name, language)
    failures: list[str] = []
    for attempt in range(1, attempts + 1):
        answer = llm.structured(messages, ToolDraft)
        draft = answer.value.model_dump()
        spec = ToolSpec.model_validate({**draft, "name": name, "language": language, "requirement": requirement})
        staging = Path(tempfile.mkdtemp(prefix="opensage-tool-"))
        try:
            os.chmod(staging, 0o755)
            code_path = staging / spec.file_name
            code_path.write_text(spec.code, encoding="utf-8")
            try:
                check_schema(spec)
                syntax_check(spec, code_path, config)
                dependency_check(spec, config)
                checked = check_examples(spec, code_path, config)
            except ToolRunError as exc:
                failures.append(f"attempt {attempt}: {exc}")
                messages = messages + [
                    {"role": "assistant", "content": json.dumps(draft)},
                    {"role": "user", "content": f"The tool was rejected: {exc}\nFix it and return the whole corrected tool spec as JSON."},
                ]
                continue
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        saved = store.save(host.workspace, spec, checked)
        host.refresh_commands()
        return Generated(saved, attempt, checked, failures)
    raise ModelError(
        f"tool {name!r} rejected after {attempts} attempts; nothing was registered. Failures:\n" + "\n".join(failures)
    )
