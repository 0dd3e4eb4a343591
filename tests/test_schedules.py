"""Each schedule, evaluated by Dagster at its tick, requests exactly its partition with a run key,
in the agent's timezone; it skips with a readable reason when paused or out of budget."""
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from support import TODAY, YESTERDAY

from cass_pipelines.config.registry import load_registry
from cass_pipelines.config.settings import load_settings
from cass_pipelines.definitions import build_defs

TZ = "America/New_York"
DAY = YESTERDAY.isoformat()   # (in the partition window: the window ends at the machine's today)


def at(day: date, hour: int, minute: int = 0, tz: str = TZ) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=ZoneInfo(tz))


@pytest.fixture
def defs(sample_home, monkeypatch):
    monkeypatch.setenv("CASS_TIMEZONE", TZ)
    settings = load_settings()
    return build_defs(settings, load_registry())


def evaluate(defs, name: str, at: datetime):
    schedule = defs.resolve_schedule_def(name)
    with dg.DagsterInstance.ephemeral() as instance:
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=at,
                                       repository_def=defs.get_repository_def(), resources=defs.resources) as ctx:
            return schedule.evaluate_tick(ctx)


@pytest.mark.parametrize("name, hour, phase", [
    ("morning_schedule", 6, "morning"),
    ("afternoon_schedule", 12, "afternoon"),
    ("evening_schedule", 18, "evening"),
    ("night_schedule", 22, "night"),
])
def test_phase_schedule_requests_its_partition(defs, name, hour, phase):
    schedule = defs.resolve_schedule_def(name)
    assert schedule.cron_schedule == f"0 {hour} * * *"
    assert schedule.execution_timezone == TZ
    result = evaluate(defs, name, at(YESTERDAY, hour))
    assert len(result.run_requests) == 1
    request = result.run_requests[0]
    assert request.partition_key == f"{DAY}|{phase}"
    assert request.run_key == f"{DAY}|{phase}"
    assert request.tags["cass/phase"] == phase


def test_ticks_use_the_agent_timezone_not_utc(defs):
    # 03:00 UTC today is 22:00 yesterday in New York: yesterday's night.
    result = evaluate(defs, "night_schedule", at(TODAY, 3, tz="UTC"))
    assert result.run_requests[0].partition_key == f"{DAY}|night"


def test_journal_schedule_writes_yesterday_after_the_night(defs):
    schedule = defs.resolve_schedule_def("journal_schedule")
    assert schedule.cron_schedule == "15 6 * * *"
    result = evaluate(defs, "journal_schedule", at(TODAY, 6, 15))
    assert result.run_requests[0].partition_key == DAY
    assert result.run_requests[0].run_key == f"journal|{DAY}"


def test_phase_schedules_skip_while_paused_and_resume(defs):
    from cass_pipelines.cli.main import main

    assert main(["pause", "--reason", "owner on holiday"]) == 0
    result = evaluate(defs, "morning_schedule", at(YESTERDAY, 6))
    assert not result.run_requests
    assert "paused: owner on holiday" in result.skip_message
    assert main(["resume"]) == 0
    result = evaluate(defs, "morning_schedule", at(YESTERDAY, 6))
    assert len(result.run_requests) == 1


def test_phase_schedule_skips_when_the_day_budget_is_spent(defs, monkeypatch):
    from cass_pipelines.services.runtime import open_runtime
    from cass_pipelines.store.ledger import LedgerRow, insert_rows

    rt = open_runtime()
    with rt.store.transaction() as conn:
        insert_rows(conn, [LedgerRow("req_spent", at(YESTERDAY, 11, tz="UTC"), YESTERDAY, "morning", None,
                                   None, None, "session.research", "research", "claude-sonnet-5-5",
                                   1, 1, 0, 0, 0, rt.settings.daily_budget_usd, False, 1, 10)])
    result = evaluate(defs, "afternoon_schedule", at(YESTERDAY, 12))
    assert not result.run_requests
    assert "budget exhausted" in result.skip_message
    # The next day starts fresh with no job needed.
    result = evaluate(defs, "morning_schedule", at(TODAY, 6))
    assert result.run_requests[0].partition_key == f"{TODAY}|morning"


@pytest.mark.parametrize("name, hour, minute", [("journal_schedule", 6, 15), ("weekly_journal_schedule", 6, 45)])
def test_the_first_ticks_on_start_date_skip_the_partitions_before_it(sample_home, monkeypatch, name, hour, minute):
    """With start_date set (the partitions begin there), the first daily journal tick asks for the night
    before it and, on a Monday, the weekly journal for the week before: skipped, not a failed tick."""
    monkeypatch.setenv("CASS_TIMEZONE", TZ)
    start = TODAY - timedelta(days=TODAY.weekday())   # a Monday
    settings = load_settings().model_copy(update={"start_date": start})
    defs = build_defs(settings, load_registry())
    result = evaluate(defs, name, at(start, hour, minute))
    assert not result.run_requests and "before the first" in result.skip_message
    later = evaluate(defs, name, at(start + timedelta(days=7), hour, minute))   # a week on: its partitions exist
    assert [r.partition_key for r in later.run_requests][0] >= start.isoformat()
