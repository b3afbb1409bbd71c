#!/usr/bin/env bash
# Install opensage with its test dependencies and run the whole test suite.
# Used by the README and by .ci/run (CI runs it on a clean clone).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e '.[dev]'
python3 -m opensage.sandbox  # which isolation level generated tools get, and a probe run
# The real OpenCode CLI and its plugin package for tests/test_opencode_e2e.py, pinned, in the
# test cache (the test installs them itself when this step could not).
if command -v npm >/dev/null 2>&1; then
    python3 -c "from tests.opencode_env import opencode_bin, plugin_seed; opencode_bin(); plugin_seed()" \
        || echo "warning: could not npm-install opencode-ai; tests/test_opencode_e2e.py will retry" >&2
fi
python3 -m pytest -q "$@"
