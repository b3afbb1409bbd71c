"""@-command parsing and the 'bad input changes nothing' promise, for every command."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from conftest import db_snapshot
from opensage.cli import cli
from opensage.commands import parse_line
from opensage.errors import UsageError
from opensage.host import Host


def test_parse_line_quoted_numbers_booleans_json():
    call = parse_line('@memory-add-node type=code label="AuthService.authenticate" content="checks a \\"password\\"" '
                      'metadata={"owner": "auth", "n": 2} subtasks=["a","b c"] weight=0.7 flag=true')
    assert call.name == "memory-add-node"
    assert call.arguments["label"] == "AuthService.authenticate"
    assert call.arguments["content"] == 'checks a "password"'
    assert call.arguments["metadata"] == {"owner": "auth", "n": 2}
    assert call.arguments["subtasks"] == ["a", "b c"]
    assert call.arguments["weight"] == "0.7" and call.arguments["flag"] == "true"


@pytest.mark.parametrize("line, fragment", [
    ('@memory-add-node label="x', "unterminated"),
    ("@memory-add-node label", "expected key=value"),
    ("@memory-add-node subtasks=[1,", "invalid JSON"),
    ("@memory-add-node a=1 a=2", "given twice"),
    ("memory-add-node a=1", "start with '@'"),
])
def test_parse_line_errors_say_what_and_how(line, fragment):
    with pytest.raises(UsageError, match=fragment):
        parse_line(line)


def test_values_are_coerced_by_the_model(host):
    host.run_line('@memory-add-node type=code label=A')
    host.run_line('@memory-add-node type=code label=B')
    out = host.run_line('@memory-add-edge fromId=A toId=B type=calls weight=0.25 metadata={"line": 3}')
    assert out.data["edge"]["weight"] == 0.25 and out.data["edge"]["metadata"] == {"line": 3}
    # snake_case spelling is accepted too
    out = host.run("memory-add-edge", {"from_id": "A", "to_id": "B", "type": "calls", "weight": "0.9"})
    assert out.data["created"] is False and out.data["edge"]["weight"] == 0.9


def _invoke(project, *args):
    return CliRunner().invoke(cli, ["--workspace", str(project), *args], catch_exceptions=False)


def _all_commands(project):
    host = Host(__import__("opensage.store", fromlist=["Workspace"]).Workspace(project))
    try:
        return list(host.commands.values())
    finally:
        host.close()


@pytest.fixture
def seeded(project):
    assert _invoke(project, "@memory-add-node", "type=code", "label=Seed", "content=seed").exit_code == 0
    return project


def test_every_command_rejects_unknown_argument_and_changes_nothing(seeded):
    commands = _all_commands(seeded)
    assert len(commands) >= 2
    for command in commands:
        before = db_snapshot(seeded)
        out = _invoke(seeded, f"@{command.name}", "bogusArgument=1")
        assert out.exit_code == 2, (command.name, out.output)
        assert "bogusArgument" in out.output and f"@{command.name}" in out.output
        assert db_snapshot(seeded) == before, f"@{command.name} changed the database on bad input"


def test_every_command_names_a_missing_required_argument(seeded):
    for command in _all_commands(seeded):
        required = [f.alias or n for n, f in command.args.model_fields.items() if f.is_required()]
        if not required:
            continue
        before = db_snapshot(seeded)
        out = _invoke(seeded, f"@{command.name}")
        assert out.exit_code == 2, (command.name, out.output)
        assert "missing required argument" in out.output and required[0] in out.output
        assert db_snapshot(seeded) == before


def test_every_command_rejects_malformed_key_value(seeded):
    for command in _all_commands(seeded):
        before = db_snapshot(seeded)
        out = _invoke(seeded, f"@{command.name}", "no-equals-sign")
        assert out.exit_code == 2 and "expected key=value" in out.output, command.name
        assert db_snapshot(seeded) == before


def test_wrong_type_and_unknown_ids(seeded, cli):
    before = db_snapshot(seeded)
    out = cli("@memory-add-edge", "fromId=Seed", "toId=n999", "type=uses")
    assert out.returncode == 2 and "unknown toId node 'n999'" in out.stderr
    out = cli("@memory-add-edge", "fromId=Seed", "toId=Seed", "type=uses", "weight=heavy")
    assert out.returncode == 2 and "'weight'" in out.stderr and "float" in out.stderr
    out = cli("@memory-add-node", "type=code", "label=X", "metadata=[1,2]")
    assert out.returncode == 2 and "'metadata'" in out.stderr
    out = cli("@memory-add-node", "type=Not A Type", "label=X")
    assert out.returncode == 2 and "node type" in out.stderr
    assert db_snapshot(seeded) == before


def test_unknown_command_suggests_the_closest(seeded, cli):
    out = cli("@memory-add-nod", "type=code", "label=x")
    assert out.returncode == 2
    assert "unknown command '@memory-add-nod'" in out.stderr and "@memory-add-node" in out.stderr


def test_same_type_and_label_updates_instead_of_duplicating(host):
    first = host.run_line('@memory-add-node type=code label=AuthService content="v1" metadata={"a": 1}')
    second = host.run_line('@memory-add-node type=code label=AuthService content="v2" metadata={"b": 2}')
    assert first.data["id"] == second.data["id"] and second.data["created"] is False
    node = second.data["node"]
    assert node["content"] == "v2" and node["metadata"] == {"a": 1, "b": 2}
    assert host.db.conn.execute("SELECT count(*) FROM nodes").fetchone()[0] == 1


def test_duplicate_edges_merge(host):
    host.run_line("@memory-add-node type=code label=A")
    host.run_line("@memory-add-node type=code label=B")
    host.run_line("@memory-add-edge fromId=A toId=B type=calls weight=0.3")
    out = host.run_line("@memory-add-edge fromId=A toId=B type=calls weight=0.6")
    assert out.data["created"] is False
    assert host.db.conn.execute("SELECT count(*), max(weight) FROM edges").fetchone()[:] == (1, 0.6)


WRITER = textwrap.dedent('''
    import sys
    from opensage.host import Host
    from opensage.store import Workspace
    host = Host(Workspace(__import__("pathlib").Path(sys.argv[1])), load_entrypoints=False)
    tag = sys.argv[2]
    for i in range(500):
        host.run("memory-add-node", {"type": "entity", "label": f"{tag}-{i}", "content": f"written by {tag}"})
    host.close()
''')


def test_two_processes_writing_500_nodes_each_lose_nothing(project):
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(project), tag]) for tag in ("left", "right")]
    assert [p.wait(timeout=240) for p in procs] == [0, 0]
    import sqlite3

    conn = sqlite3.connect(project / ".opencode" / "opensage.db")
    labels = {r[0] for r in conn.execute("SELECT label FROM nodes")}
    assert len(labels) == 1000
    assert conn.execute("SELECT count(*) FROM nodes_fts").fetchone()[0] == 1000
