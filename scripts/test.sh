#!/usr/bin/env bash
# Quick start 2: set up and run the test suite. Extra arguments go to pytest, e.g.
#   ./scripts/test.sh tests/test_registry.py -k duplicate
set -euo pipefail
source "$(dirname "$0")/_setup.sh"

# The tests make their own CASS_HOME and DAGSTER_HOME; never the user's, never a real API key.
unset CASS_HOME DAGSTER_HOME CASS_ACTIONS_FILE CASS_TIMEZONE CASS_DAILY_BUDGET_USD ANTHROPIC_API_KEY ANTHROPIC_BASE_URL
export CASS_LLM=offline
exec .venv/bin/python -m pytest "$@"
