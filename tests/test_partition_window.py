"""The date partitions a user sees: without a start_date the last 30 days and today (what the UI's
"Materialize all" offers stays small), with one from that date on; run-phase refuses a date outside."""
from datetime import timedelta

import dagster as dg
from support import NOW, TODAY

from cass_pipelines.cli.main import main
from cass_pipelines.config.settings import load_settings
from cass_pipelines.domain.settings import PARTITION_WINDOW_DAYS


def phase_partitions() -> list[str]:
    from cass_pipelines.config.registry import load_registry
    from cass_pipelines.definitions import build_defs

    defs = build_defs(load_settings(), load_registry(None))
    return defs.resolve_asset_graph().get(dg.AssetKey("phase_plan")).partitions_def.get_partition_keys(current_time=NOW)   # Dagster reads the real clock


def test_without_a_start_date_the_partitions_are_the_last_30_days(sample_home, capsys):
    first = TODAY - timedelta(days=PARTITION_WINDOW_DAYS)
    keys = phase_partitions()
    assert len(keys) == (PARTITION_WINDOW_DAYS + 1) * 4 == 124
    assert {k.split("|")[0] for k in keys} == {str(first + timedelta(days=n)) for n in range(PARTITION_WINDOW_DAYS + 1)}
    assert main(["run-phase", "morning", "--date", str(first - timedelta(days=1))]) == 2
    assert f"dates run from {first} (the last 30 days)" in capsys.readouterr().err


def test_a_start_date_in_cass_toml_fixes_the_first_partition(sample_home, capsys):
    start = TODAY - timedelta(days=90)
    config = load_settings().config_file
    config.write_text(f"start_date = {start}\n" + config.read_text())   # top level, before any [table]
    keys = phase_partitions()
    assert min(k.split("|")[0] for k in keys) == str(start) and len(keys) == 91 * 4
    assert main(["run-phase", "morning", "--date", str(start - timedelta(days=1))]) == 2
    assert f"dates run from start_date {start} to today" in capsys.readouterr().err
