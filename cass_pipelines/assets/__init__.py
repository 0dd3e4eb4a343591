"""Dagster assets. Each module builds its assets from settings (timezone, partitions) and registry."""
