"""The week's assets: `weekly_intention` and `weekly_journal`, partitioned by week (from Monday, in the
agent's timezone). Thin: each body asks services.week for the work."""

from datetime import date

import dagster as dg

from cass_pipelines.defs.resources import CassResource, run_over
from cass_pipelines.domain.clock import clock_from_env
from cass_pipelines.domain.goals import week_start
from cass_pipelines.domain.settings import Settings
from cass_pipelines.services.handlers.calls import system_prefix
from cass_pipelines.services.metering import BudgetRefused, MeterContext
from cass_pipelines.services.runner import metered
from cass_pipelines.services.week import (
    JOURNAL_ACTION_ID,
    JOURNAL_CATEGORY,
    WEEK_ACTION_ID,
    WEEK_CATEGORY,
    journal_budget_day,
    journal_wait,
    plan_budget_day,
    plan_week,
    refused_wait,
    write_week_journal,
)
from cass_pipelines.store.claims import Owner


def week_partitions(settings: Settings) -> dg.WeeklyPartitionsDefinition:
    # Weeks start on Monday (day_offset=1), from the week of the first date partition; end_offset=1
    # includes the current week.
    today = clock_from_env().now().astimezone(settings.tz).date()
    return dg.WeeklyPartitionsDefinition(start_date=week_start(settings.first_date(today)).isoformat(),
                                         timezone=settings.timezone, day_offset=1, end_offset=1)


def build_week_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(name="weekly_intention", partitions_def=partitions, group_name="week", kinds={"duckdb"},
              deps=["self_model"], pool="cass_store",
              description="The week's goals and intention, chosen by the agent in its own voice (it makes goals "
                          "from its growth edges and questions when it holds none). Each day's plan sees it.")
    def weekly_intention(context: dg.AssetExecutionContext, cass: CassResource) -> dg.MaterializeResult:
        rt, clock = cass.for_run(context), cass.clock()
        week = date.fromisoformat(context.partition_key)
        llm = metered(rt, clock, MeterContext(date=plan_budget_day(rt.store, rt.settings, week, clock.now()),
                                              phase=None, category=WEEK_CATEGORY, priority="high",
                                              work_unit_id=None, action_id=WEEK_ACTION_ID, run_id=context.run_id))
        plan = plan_week(rt, llm, system_prefix(rt.store, rt.registry, llm, "fast"), week, clock.now(),
                         Owner.here(context.run_id), run_over(context.instance))
        if plan.error:
            context.log.warning(f"week {week}: {plan.error}")
        return dg.MaterializeResult(metadata={
            "intention": plan.intention, "source": plan.source, "goal_ids": ", ".join(plan.goal_ids),
            "goals_made": len(plan.goals_made), "cost_usd": dg.MetadataValue.float(round(llm.cost_usd, 6)),
            **({"waits": plan.waits} if plan.waits else {})})

    @dg.asset(name="weekly_journal", partitions_def=partitions, group_name="week", kinds={"duckdb"},
              deps=["weekly_intention", "daily_journal"], pool="cass_store",
              description="The week's journal in the agent's voice, from its daily journals, goal progress and "
                          "insights.")
    def weekly_journal(context: dg.AssetExecutionContext, cass: CassResource) -> dg.MaterializeResult:
        rt, clock = cass.for_run(context), cass.clock()
        week = date.fromisoformat(context.partition_key)
        # Written once: not half a week, nor without a daily journal still to come (journal_wait).
        wait, entry = journal_wait(rt.store, rt.settings, week, clock.now().astimezone(rt.settings.tz).date()), None
        if not wait:
            llm = metered(rt, clock, MeterContext(date=journal_budget_day(rt.store, rt.settings, week, clock.now()),
                                                  phase=None, category=JOURNAL_CATEGORY,
                                                  priority="normal", work_unit_id=None, action_id=JOURNAL_ACTION_ID,
                                                  run_id=context.run_id))
            try:
                entry = write_week_journal(rt, llm, system_prefix(rt.store, rt.registry, llm, "fast"), week,
                                           clock.now(), Owner.here(context.run_id), run_over(context.instance))
            except BudgetRefused as exc:   # nothing stored, the claim let go: a later morning asks again
                wait = refused_wait(exc)
        if entry is None:
            context.log.info(f"the week of {week}: {wait}")
            return dg.MaterializeResult(metadata={"written": False, "waits": wait, "tone": "",
                                                  "text": dg.MetadataValue.md(f"_{wait}_")})
        return dg.MaterializeResult(metadata={"written": True, "tone": entry["tone"],
                                              "text": dg.MetadataValue.md(entry["text"])})

    return [weekly_intention, weekly_journal]
