#!/usr/bin/env bash
# Install opensage with its test dependencies and run the whole test suite.
# Used by the README and by .ci/run (CI runs it on a clean clone).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e '.[dev]'
python3 -m opensage.sandbox  # which isolation level generated tools get, and a probe run
python3 -m pytest -q "$@"
