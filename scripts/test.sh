#!/usr/bin/env bash
# Quick start 2: set up and run the test suite. Extra arguments go to pytest, e.g.
#   ./scripts/test.sh tests/test_registry.py -k duplicate
set -euo pipefail
source "$(dirname "$0")/_setup.sh"

# promtool checks the alert rules in deploy/prometheus (tests/test_deploy.py). Installed from Debian when
# missing and this is root with apt-get; otherwise that test skips and says why.
if ! command -v promtool >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing promtool (Debian package prometheus)"
    { apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1; }; } ||
        echo "    could not install prometheus; tests/test_deploy.py will skip the promtool checks"
fi

# The tests make their own CASS_HOME and DAGSTER_HOME; never the user's, never a real API key.
unset CASS_HOME DAGSTER_HOME CASS_LOG_FORMAT CASS_LOG_LEVEL CASS_ACTIONS_FILE CASS_TIMEZONE CASS_DAILY_BUDGET_USD ANTHROPIC_API_KEY ANTHROPIC_BASE_URL
export CASS_LLM=offline
exec .venv/bin/python -m pytest "$@"
