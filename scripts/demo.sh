#!/usr/bin/env bash
# Install opensage and run its main job on real input: build the code graph of the
# installed `click` package in a scratch project, then ask graph memory who calls a
# method (reverse traversal), find a symbol by a misspelled name (similarity), and draw
# the method's neighbourhood as a Mermaid flowchart.
# opensage goes into a virtual environment, .venv in the repository (scripts/_venv.sh),
# so this works on a system Python that refuses `pip install` (Debian/Ubuntu).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
source scripts/_venv.sh
python -m pip install --quiet --disable-pip-version-check -e .
project=$(mktemp -d "${TMPDIR:-/tmp}/opensage-demo.XXXXXX")
git -C "$project" init -q
cd "$project"
click_src=$(python -c 'import click, os; print(os.path.dirname(click.__file__))')
run() { printf '\n$ %s\n' "$*"; "$@"; }
run opensage @memory-ingest path="$click_src"
run opensage @memory-query query=click.core.Command.make_context mode=traversal direction=in edgeTypes='["calls"]' depth=2 maxResults=5
run opensage @memory-query query="Contxt.invok" maxResults=3
run opensage @memory-visualize centerNode=click.core.Command.make_context radius=1 maxNodes=10
run opensage @memory-query mode=code relation=callers query=Command.make_context depth=2
run opensage @memory-query mode=code relation=implementors query=click.core.Command.invoke
run opensage @memory-query mode=code relation=exists query=click.Context.teleport
printf '\nState is in %s/.opencode/ (try more: source %s/bin/activate && cd %s && opensage commands)\n' \
    "$project" "$VIRTUAL_ENV" "$project"
