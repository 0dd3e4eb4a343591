"""The code location. Settings and the registry are validated here, so a bad registry or setting
fails the load with a message naming the file, template, action or field."""
from __future__ import annotations

import dagster as dg

from cass_pipelines.assets.journal import build_conversation_summaries, build_daily_journal
from cass_pipelines.assets.plan import build_phase_plan
from cass_pipelines.assets.results import build_results
from cass_pipelines.assets.sources import conversations, self_model
from cass_pipelines.assets.week import build_week_assets, build_week_jobs, build_week_schedules, week_partitions
from cass_pipelines.assets.work import build_actions_check, build_phase_work
from cass_pipelines.checks import build_budget_check, build_cost_checks
from cass_pipelines.core.categories import PHASES
from cass_pipelines.core.registry import Registry, load_registry
from cass_pipelines.core.settings import Settings, load_settings
from cass_pipelines.jobs import build_jobs
from cass_pipelines.loggers import cass_console_logger
from cass_pipelines.partitions import date_partitions, phase_partitions
from cass_pipelines.resources import cass_resource
from cass_pipelines.schedules import build_journal_schedule, build_phase_schedule
from cass_pipelines.sensors import (
    build_budget_sensor,
    build_dead_letter_sensor,
    build_idle_memory_sensor,
    build_source_observation_sensor,
)


def build_defs(settings: Settings, registry: Registry) -> dg.Definitions:
    phases, dates = phase_partitions(settings), date_partitions(settings)
    phase_job, journal_job, memory_job, manual_work_job, retry_job = build_jobs(phases, dates,
                                                                                registry.max_sequence_length)
    weeks = week_partitions(settings)
    week_job, week_journal_job, approval_job = build_week_jobs(weeks, registry.max_sequence_length)
    return dg.Definitions(
        assets=[conversations, self_model, build_phase_plan(phases),
                build_phase_work(phases, registry.max_sequence_length), *build_results(phases),
                build_daily_journal(dates), build_conversation_summaries(), *build_week_assets(weeks)],
        asset_checks=[build_actions_check(phases), *build_cost_checks(phases), build_budget_check(phases)],
        jobs=[phase_job, journal_job, memory_job, manual_work_job, retry_job, week_job, week_journal_job,
              approval_job],
        schedules=[*(build_phase_schedule(settings, p, phase_job) for p in PHASES),
                   build_journal_schedule(settings, journal_job),
                   *build_week_schedules(settings, week_job, week_journal_job)],
        sensors=[build_idle_memory_sensor(settings, memory_job), build_budget_sensor(settings),
                 build_dead_letter_sensor(), build_source_observation_sensor()],
        # Every job, and the implicit asset job behind the UI's Materialize and backfills, runs in one
        # process: a multiprocess step costs seconds of start-up (52-250 s per phase run against 11-21 s).
        executor=dg.in_process_executor,
        # Step outputs pass in memory: every asset stores its data in DuckDB and returns only metadata, and
        # a failed phase is recovered by re-running it (it resumes each unit), not by re-executing steps.
        resources={"cass": cass_resource(settings.db_path), "io_manager": dg.mem_io_manager},
        loggers={"console": cass_console_logger},
    )


defs = build_defs(settings := load_settings(), load_registry(settings.actions_file, settings.handler_modules))
