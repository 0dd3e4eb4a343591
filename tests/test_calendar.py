"""The same day gives the same result whatever the calendar says: the sample is shifted relative to the
injected "today", and the offline model's answers do not depend on dates in its prompts."""
from __future__ import annotations

import json
import re
from datetime import timedelta

from support import NOW, SAMPLE_DAY

from cass_pipelines.cli.main import main
from cass_pipelines.domain.clock import NOW_ENV
from cass_pipelines.services.runtime import open_runtime

DATES = re.compile(r"\d{4}-\d{2}-\d{2}|\d{8}_")
SHIFT = timedelta(weeks=-17)   # whole weeks: the same weekday, so prompts keep their length


def run_morning(tmp_path, monkeypatch, capsys, shift: timedelta) -> dict:
    home = tmp_path / f"cass{shift.days}"
    monkeypatch.setenv("CASS_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.setenv(NOW_ENV, (NOW + shift).isoformat())
    assert main(["init", "--sample"]) == 0
    day = (SAMPLE_DAY + shift).isoformat()
    capsys.readouterr()
    assert main(["run-day", "--date", day, "--phases", "morning", "--no-journal", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rt = open_runtime()
    units = [(u["template_id"], u["status"], u["focus"]) for us in report["plan"]["phases"].values() for u in us]
    # What ran and what it called; not the wording of later answers, which quote rows whose ids are random.
    calls = rt.store.all("SELECT action_id, count(*) AS n FROM llm_ledger GROUP BY ALL ORDER BY ALL")
    result = {"source": report["plan"]["source"], "intention": report["plan"]["day_intention"], "units": units,
              "calls": calls, "summaries": rt.store.scalar("SELECT count(*) FROM conversation_summaries"),
              "work_summaries": rt.store.scalar("SELECT count(*) FROM work_summaries")}
    return json.loads(DATES.sub("<date>", json.dumps(result, default=str)))   # the dates themselves differ


def test_a_day_run_on_two_calendar_dates_gives_the_same_result(tmp_path, monkeypatch, capsys, cass_env):
    first = run_morning(tmp_path, monkeypatch, capsys, timedelta(0))
    second = run_morning(tmp_path, monkeypatch, capsys, SHIFT)
    assert first["units"] and first["summaries"] == 56
    assert first == second


def test_a_day_of_a_cass_now_after_the_machines_clock_runs(cass_env, monkeypatch, capsys):
    """CASS_NOW moves the clock of the runs the CLI starts, Dagster's partitions included (Dagster ends them
    by the machine's clock, in every thread of a run): a simulation of a date far ahead of the machine runs
    its own dates, the day's journal too (its step stores its date partition on an executor thread)."""
    from datetime import datetime, timezone

    later = datetime(2099, 3, 5, 8, tzinfo=timezone.utc)   # after any machine's clock this suite will meet
    monkeypatch.setenv(NOW_ENV, later.isoformat())
    assert main(["init", "--sample"]) == 0
    capsys.readouterr()
    yesterday = (later - timedelta(days=1)).date().isoformat()
    assert main(["run-day", "--date", yesterday, "--phases", "night", "--json"]) == 0, capsys.readouterr().out
    report = json.loads(capsys.readouterr().out)
    assert report["date"] == yesterday and all(run["success"] for run in report["runs"]), report["runs"]
    assert report["runs"][-1]["phase"] == "journal"
