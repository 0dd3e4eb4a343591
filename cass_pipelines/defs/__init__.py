"""Dagster assets. Each module builds its assets from settings (timezone, partitions) and registry."""
import dagster as dg


def usd(value: float) -> dg.MetadataValue:
    """Dollars as float metadata, so the UI plots them across partitions."""
    return dg.MetadataValue.float(round(float(value), 6))
