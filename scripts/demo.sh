#!/usr/bin/env bash
# Quick start 1: set up, load the sample agent (Cass), validate, and run today's working day through
# Dagster with the offline LLM (no key, no network, no cost), then print the day's report.
#   ./scripts/demo.sh                      # today, all phases, offline
#   ./scripts/demo.sh --date 2026-11-20    # extra arguments go to `cass-pipelines run-day`
#   CASS_LLM=auto ./scripts/demo.sh        # use the real API when ANTHROPIC_API_KEY is set
set -euo pipefail
source "$(dirname "$0")/_setup.sh"

export CASS_HOME="${CASS_HOME:-$ROOT/.cass}"
export CASS_LLM="${CASS_LLM:-offline}"
CLI=.venv/bin/cass-pipelines

echo "==> cass-pipelines init --sample   (CASS_HOME=$CASS_HOME)"
$CLI init --sample
echo "==> cass-pipelines validate"
$CLI validate

echo "==> cass-pipelines run-day $*   (CASS_LLM=$CASS_LLM)"
$CLI run-day "$@"
echo
echo "Done. Look closer with: $CLI plan | budget | ledger | journal | summaries | status"
echo "Open the Dagster UI:   CASS_HOME=\"$CASS_HOME\" $CLI ui   (or: DAGSTER_HOME=\"${DAGSTER_HOME:-$CASS_HOME/dagster}\" CASS_HOME=\"$CASS_HOME\" .venv/bin/dg dev)"
