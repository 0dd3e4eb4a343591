#!/usr/bin/env bash
# Quick start 2: set up and run the test suite. Extra arguments go to pytest, e.g.
#   ./scripts/test.sh tests/test_registry.py -k duplicate
set -euo pipefail
source "$(dirname "$0")/_setup.sh"

# Binaries some tests use, from Debian: promtool (package prometheus) checks the alert rules in
# deploy/prometheus, chromium drives the browser test of the UI, postgresql's initdb/pg_ctl run a
# throwaway server for the PostgreSQL instance test. Installed when missing and this is root with
# apt-get; otherwise those tests skip and say why.
install_debian() {   # COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    ls /usr/lib/postgresql/*/bin/"$1" >/dev/null 2>&1 && return 0
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || return 0
    echo "==> installing $1 (Debian package $2)"
    { apt-get install -y -q --no-install-recommends "$2" >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends "$2" >/dev/null 2>&1; }; } ||
        echo "    could not install $2; the tests that need $1 will skip"
}
install_debian promtool prometheus
install_debian chromium chromium
install_debian initdb postgresql

# The tests make their own CASS_HOME and DAGSTER_HOME; never the user's, never a real API key.
unset CASS_HOME DAGSTER_HOME CASS_LOG_FORMAT CASS_LOG_LEVEL CASS_ACTIONS_FILE CASS_TIMEZONE CASS_DAILY_BUDGET_USD ANTHROPIC_API_KEY ANTHROPIC_BASE_URL
export CASS_LLM=offline
# Two workers (the machines have 2 cores), whole files per worker: a file's tests share its fixtures.
# CASS_TEST_WORKERS=0 runs in one process.
exec .venv/bin/python -m pytest -n "${CASS_TEST_WORKERS:-2}" --dist loadfile "$@"
