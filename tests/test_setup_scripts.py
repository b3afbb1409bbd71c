"""The README's set-up command on a system Python (issue 13, "Set-up a user meets").

``bash scripts/demo.sh`` runs in a copy of the repository with only ``/usr/bin:/bin``
on PATH, so ``python3`` is the distribution's interpreter: on Debian/Ubuntu it refuses
``pip install`` (PEP 668, "externally-managed-environment"); the script must make and
use ``.venv`` and run the main job. Slow (installs opensage from PyPI into a new venv:
about 40 s with a warm pip cache).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

SYSTEM_PYTHON = Path("/usr/bin/python3")


@pytest.mark.slow
@pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="no system Python at /usr/bin/python3")
def test_demo_sh_installs_into_a_venv_and_runs_the_main_job_on_the_system_python(tmp_path):
    repo = tmp_path / "opensage"
    shutil.copytree(REPO, repo, ignore=shutil.ignore_patterns(
        ".git", ".venv", "node_modules", "__pycache__", ".pytest_cache", ".opencode", "*.egg-info"))
    env = {"HOME": os.environ.get("HOME", str(tmp_path)), "PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path),
           "LANG": "C.UTF-8"}
    for key in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CACHE_DIR", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"):
        if key in os.environ:
            env[key] = os.environ[key]
    proc = subprocess.run(["bash", "scripts/demo.sh"], cwd=repo, env=env, capture_output=True, text=True, timeout=1200)
    try:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        assert (repo / ".venv" / "bin" / "opensage").exists()
        # the main job ran: who calls make_context, the misspelled lookup, the Mermaid drawing
        assert "click.core.Command.main" in proc.stdout
        assert "click.core.Context.invoke" in proc.stdout
        assert "flowchart LR" in proc.stdout
        assert "externally-managed-environment" not in proc.stderr
    finally:
        found = re.search(r"State is in (\S+)/\.opencode/", proc.stdout)
        if found and Path(found.group(1)).is_relative_to(tmp_path):
            shutil.rmtree(found.group(1), ignore_errors=True)
        shutil.rmtree(repo / ".venv", ignore_errors=True)
