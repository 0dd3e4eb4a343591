"""cass-pipelines: a self-directed working day for a persistent AI agent, orchestrated by Dagster."""
