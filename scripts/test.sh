#!/usr/bin/env bash
# Install opensage with its test dependencies and run the whole test suite.
# Used by the README and by .ci/run (CI runs it on a clean clone). Like scripts/demo.sh
# it installs into the virtual environment .venv (scripts/_venv.sh), so it works on a
# system Python that refuses `pip install` (Debian/Ubuntu) as well as in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh  # also puts the venv's bin (opensage, opensage-hook) first on PATH
python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
python -m opensage.sandbox  # which isolation level generated tools get, and a probe run
# The real OpenCode CLI and its plugin package (tests/test_opencode_e2e.py), the real
# Claude Code CLI (tests/test_claude_e2e.py) and the MCP reference memory server
# (tests/test_memory_reference_diff.py) and the SCIP indexers (tests/test_codegraph_scip.py), pinned, in the test cache (the tests install
# them themselves when this step could not).
if command -v npm >/dev/null 2>&1; then
    python -c "from tests.opencode_env import opencode_bin, plugin_seed; opencode_bin(); plugin_seed()" \
        || echo "warning: could not npm-install opencode-ai; tests/test_opencode_e2e.py will retry" >&2
    python -c "from tests.claude_env import claude_bin; claude_bin()" \
        || echo "warning: could not npm-install @anthropic-ai/claude-code; tests/test_claude_e2e.py will retry" >&2
    python -c "from tests.reference_memory_env import reference_server_js; reference_server_js()" \
        || echo "warning: could not npm-install the reference memory server; its test will retry" >&2
    python -c "from tests.scip_env import scip_python_js, scip_typescript_js; scip_python_js(); scip_typescript_js()" \
        || echo "warning: could not npm-install the SCIP indexers; tests/test_codegraph_scip.py will retry" >&2
fi
python -m pytest -q "$@"
