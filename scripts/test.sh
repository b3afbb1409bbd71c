#!/usr/bin/env bash
# Install opensage with its test dependencies and run the whole test suite.
# Used by the README and by .ci/run (CI runs it on a clean clone).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e '.[dev]'
python3 -m opensage.sandbox  # which isolation level generated tools get, and a probe run
# The real OpenCode CLI and its plugin package (tests/test_opencode_e2e.py) and the real
# Claude Code CLI (tests/test_claude_e2e.py), pinned, in the test cache (the tests install
# them themselves when this step could not).
if command -v npm >/dev/null 2>&1; then
    python3 -c "from tests.opencode_env import opencode_bin, plugin_seed; opencode_bin(); plugin_seed()" \
        || echo "warning: could not npm-install opencode-ai; tests/test_opencode_e2e.py will retry" >&2
    python3 -c "from tests.claude_env import claude_bin; claude_bin()" \
        || echo "warning: could not npm-install @anthropic-ai/claude-code; tests/test_claude_e2e.py will retry" >&2
fi
# The installed host config runs opensage and opensage-hook by name: put the scripts pip
# just installed first on PATH, as an activated virtual environment does.
PATH="$(python3 -c 'import sys, os; print(os.path.dirname(sys.executable))'):$PATH" python3 -m pytest -q "$@"
