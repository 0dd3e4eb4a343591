"""The week: `weekly_intention` and `weekly_journal` (weekly partitions from Monday, in the agent's
timezone), their jobs and schedules, and `approval_job`, which releases (or rejects) work waiting
for a person's approval. Thin: each body asks core.week / core.approvals for the work."""

from datetime import date, timedelta

import dagster as dg

from cass_pipelines.assets.work import action_chains, after_chains, emit_units, unit_groups
from cass_pipelines.core import approvals
from cass_pipelines.core.goals import week_start
from cass_pipelines.core.handlers.calls import system_prefix
from cass_pipelines.core.runner import metered, summarize
from cass_pipelines.core.settings import Settings
from cass_pipelines.core.week import JOURNAL_ACTION_ID, WEEK_ACTION_ID, plan_week, write_week_journal
from cass_pipelines.llm.metered import MeterContext
from cass_pipelines.resources import CassResource, run_over
from cass_pipelines.schedules import tick_time
from cass_pipelines.store import plans

INTENTION_LEAD_MINUTES = 30     # the week is planned this long before Monday's first phase
JOURNAL_AFTER_MINUTES = 45      # the past week's journal, after the Sunday night's daily journal


def week_partitions(settings: Settings) -> dg.WeeklyPartitionsDefinition:
    # Weeks start on Monday (day_offset=1); end_offset=1 includes the current week.
    return dg.WeeklyPartitionsDefinition(start_date=week_start(settings.start_date).isoformat(),
                                         timezone=settings.timezone, day_offset=1, end_offset=1)


def build_week_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(name="weekly_intention", partitions_def=partitions, group_name="week", kinds={"duckdb"},
              deps=["self_model"], pool="cass_store",
              description="The week's goals and intention, chosen by the agent in its own voice (it makes goals "
                          "from its growth edges and questions when it holds none). Each day's plan sees it.")
    def weekly_intention(context: dg.AssetExecutionContext, cass: CassResource) -> dg.MaterializeResult:
        rt, clock = cass.for_run(context), cass.clock()
        week = date.fromisoformat(context.partition_key)
        llm = metered(rt, clock, MeterContext(date=week, phase=None, category="system", priority="high",
                                              work_unit_id=None, action_id=WEEK_ACTION_ID, run_id=context.run_id))
        plan = plan_week(rt, llm, system_prefix(rt.store, rt.registry, llm, "fast"), week, clock.now())
        if plan.error:
            context.log.warning(f"week {week}: {plan.error}")
        return dg.MaterializeResult(metadata={
            "intention": plan.intention, "source": plan.source, "goal_ids": ", ".join(plan.goal_ids),
            "goals_made": len(plan.goals_made), "cost_usd": dg.MetadataValue.float(round(llm.cost_usd, 6))})

    @dg.asset(name="weekly_journal", partitions_def=partitions, group_name="week", kinds={"duckdb"},
              deps=["weekly_intention", "daily_journal"], pool="cass_store",
              description="The week's journal in the agent's voice, from its daily journals, goal progress and "
                          "insights.")
    def weekly_journal(context: dg.AssetExecutionContext, cass: CassResource) -> dg.MaterializeResult:
        rt, clock = cass.for_run(context), cass.clock()
        week = date.fromisoformat(context.partition_key)
        llm = metered(rt, clock, MeterContext(date=week + timedelta(days=6), phase=None, category="journal",
                                              priority="normal", work_unit_id=None, action_id=JOURNAL_ACTION_ID,
                                              run_id=context.run_id))
        entry = write_week_journal(rt, llm, system_prefix(rt.store, rt.registry, llm, "fast"), week, clock.now())
        return dg.MaterializeResult(metadata={
            "written": entry is not None, "tone": entry["tone"] if entry else "",
            "text": dg.MetadataValue.md(entry["text"] if entry else "_nothing recorded this week_")})

    return [weekly_intention, weekly_journal]


class ApprovalConfig(dg.Config):
    work_unit_id: str                # from `cass-pipelines approvals list`
    approve: bool = True             # False rejects it
    reason: str = ""                 # required to reject
    decided_by: str = "dagster-ui"


def build_week_jobs(partitions: dg.PartitionsDefinition, max_length: int) -> list:
    @dg.op(out=unit_groups(max_length))
    def decide_approval(context: dg.OpExecutionContext, config: ApprovalConfig, cass: CassResource):
        """Record the decision; an approved unit then runs below, through the usual claims and budget."""
        rt, clock = cass.for_run(context), cass.clock()
        if not config.approve and not config.reason.strip():
            raise dg.Failure("a rejection needs a reason (config `reason`)")
        try:
            verdict = approvals.decide(rt, config.work_unit_id, config.approve, config.reason.strip(),
                                       config.decided_by, clock.now(), run_id=context.run_id)
        except approvals.ApprovalError as exc:
            raise dg.Failure(str(exc)) from None
        context.log.info(f"{verdict.work_unit_id}: {verdict.state.value} ({verdict.reason})")
        if config.approve:
            yield from emit_units(rt, [plans.get_unit(rt.store, config.work_unit_id)])

    @dg.op(ins=after_chains(max_length))
    def finish_approved_work(context: dg.OpExecutionContext, cass: CassResource) -> None:
        """Summarise the unit this run ran (none when the work was rejected)."""
        rt = cass.for_run(context)
        for unit in plans.units_for_run(rt.store, context.run_id):
            summarize(rt, unit, cass.clock(), context.run_id, is_run_over=run_over(context.instance))
            context.log.info(f"{unit['id']}: {unit['status']} {unit['reason'] or unit['error'] or ''}")

    @dg.job(name="approval_job", executor_def=dg.in_process_executor,
            description="Approve (and run) or reject work waiting for approval (launchpad config: work_unit_id, "
                        "approve, reason).")
    def approval_job():
        finish_approved_work(**action_chains(decide_approval(), max_length))

    return [
        dg.define_asset_job("week_job", selection=["weekly_intention"], partitions_def=partitions,
                            executor_def=dg.in_process_executor, description="Plan the week: goals and intention."),
        dg.define_asset_job("week_journal_job", selection=["weekly_journal"], partitions_def=partitions,
                            executor_def=dg.in_process_executor, description="Write the past week's journal."),
        approval_job,
    ]


def build_week_schedules(settings: Settings, week_job, journal_job) -> list[dg.ScheduleDefinition]:
    morning = max(0, settings.phase_hours["morning"][0] * 60 - INTENTION_LEAD_MINUTES)
    night_end = settings.phase_hours["night"][1] * 60 + JOURNAL_AFTER_MINUTES

    @dg.schedule(name="weekly_intention_schedule", job=week_job, cron_schedule=f"{morning % 60} {morning // 60} * * 1",
                 execution_timezone=settings.timezone, default_status=dg.DefaultScheduleStatus.RUNNING,
                 description="Plan the week (goals and intention) on Monday before the first phase.")
    def weekly_intention_schedule(context: dg.ScheduleEvaluationContext):
        key = week_start(tick_time(context, settings).date()).isoformat()
        return dg.RunRequest(run_key=f"week|{key}", partition_key=key, tags={"cass/trigger": "schedule"})

    @dg.schedule(name="weekly_journal_schedule", job=journal_job,
                 cron_schedule=f"{night_end % 60} {night_end // 60} * * 1", execution_timezone=settings.timezone,
                 default_status=dg.DefaultScheduleStatus.RUNNING,
                 description="Write the week that ended on Sunday night into the weekly journal, on Monday morning.")
    def weekly_journal_schedule(context: dg.ScheduleEvaluationContext):
        key = (week_start(tick_time(context, settings).date()) - timedelta(days=7)).isoformat()
        return dg.RunRequest(run_key=f"week_journal|{key}", partition_key=key, tags={"cass/trigger": "schedule"})

    return [weekly_intention_schedule, weekly_journal_schedule]
