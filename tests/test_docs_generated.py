"""Generated docs stay in step with the code: commands reference, routes schema, the
routing table in tachikoma.md and the command list in the meta SKILL."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
GEN = REPO / "scripts" / "gen_docs.py"
TACHIKOMA = REPO / "opensage" / "agents" / "tachikoma.md"
SKILL = REPO / "opensage" / "skills" / "meta" / "SKILL.md"
ROUTES = REPO / "opensage" / "config" / "intent-routes.yaml"


def run_gen(*args):
    return subprocess.run([sys.executable, str(GEN), *args], capture_output=True, text=True, timeout=120)


def test_committed_docs_match_a_fresh_generation():
    out = run_gen("--check")
    assert out.returncode == 0, f"{out.stderr}\nRun: python scripts/gen_docs.py"


def table_rows(markdown: str) -> dict[str, list[str]]:
    body = markdown.split("<!-- routing-table:start -->", 1)[1].split("<!-- routing-table:end -->", 1)[0]
    rows = {}
    for line in body.strip().splitlines()[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows[cells[0].strip("`")] = cells
    return rows


def test_tachikoma_routing_table_matches_the_yaml():
    routes = [r for r in yaml.safe_load(ROUTES.read_text())["routes"] if r.get("enabled", True)]
    rows = table_rows(TACHIKOMA.read_text())
    assert list(rows) == [r["name"] for r in routes]
    for route in routes:
        cells = rows[route["name"]]
        command = f"`{route['command']}`" if route["command"] else "nothing (the host answers)"
        assert cells[2] == command
        assert float(cells[4]) == route["confidence_threshold"]
        assert float(cells[5]) == route.get("similarity_threshold", 0.4)
        for arg in route.get("arguments") or {}:
            assert f"`{arg}`" in cells[6]


def test_check_fails_on_drift(tmp_path):
    root = tmp_path / "repo"
    for rel in ("docs", "opensage/agents", "opensage/skills/meta", "opensage/config"):
        (root / rel).mkdir(parents=True)
    for rel in ("docs/commands.md", "docs/intent-routes-schema.md", "opensage/agents/tachikoma.md",
                "opensage/skills/meta/SKILL.md", "opensage/config/intent-routes.yaml"):
        shutil.copy(REPO / rel, root / rel)
    assert run_gen("--check", "--root", str(root)).returncode == 0
    routes = root / "opensage/config/intent-routes.yaml"
    routes.write_text(routes.read_text().replace("confidence_threshold: 0.78", "confidence_threshold: 0.79", 1))
    out = run_gen("--check", "--root", str(root))
    assert out.returncode == 1 and "opensage/agents/tachikoma.md" in out.stderr
    assert run_gen("--root", str(root)).returncode == 0          # regenerating fixes it
    assert run_gen("--check", "--root", str(root)).returncode == 0
    assert "| 0.79 |" in (root / "opensage/agents/tachikoma.md").read_text()


def test_skill_has_agent_skills_frontmatter():
    text = SKILL.read_text()
    front = yaml.safe_load(text.split("---", 2)[1])
    assert front["name"] == SKILL.parent.name and re.fullmatch(r"[a-z0-9-]{1,64}", front["name"])
    assert 0 < len(front["description"]) <= 1024
    listed = set(re.findall(r"- `@([a-z0-9-]+)", text))
    documented = set(re.findall(r"^## @([a-z0-9-]+)$", (REPO / "docs" / "commands.md").read_text(), re.M))
    assert listed == documented and {"memory-query", "vertical-decompose", "generate-tool"} <= listed
