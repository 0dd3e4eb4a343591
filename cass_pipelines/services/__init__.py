"""Pure domain code: no Dagster import. Registry, settings, phases, planning, budget, handlers."""
