"""Handlers for system.* actions: real upkeep with no model call, each leaving a record of what it did."""
from __future__ import annotations

from datetime import timedelta

from cass_pipelines.config.registry import DEFAULT_REGISTRY_FILE, read_registry_file
from cass_pipelines.services.handlers.base import ActionResult, Artifact, HandlerContext
from cass_pipelines.services.lookback import deferred_since, supersede_waiting
from cass_pipelines.services.recovery import recover
from cass_pipelines.store import maintenance, notes, schema
from cass_pipelines.store.claims import never_over

STUCK_AFTER = timedelta(hours=6)   # a unit 'running' this long has lost its process


def _report(ctx: HandlerContext, kind: str, title: str, lines: list[str]) -> Artifact:
    doc = notes.add_document(ctx.store, kind=kind, title=title, body="\n".join(lines), work_unit_id=ctx.work_unit_id,
                             offline=False, now=ctx.now)
    return Artifact(type="document", id=doc, title=title)


def queue_maintenance(ctx: HandlerContext) -> ActionResult:
    superseded = supersede_waiting(ctx.store, ctx.settings, ctx.registry, ctx.now)   # done since: not expired
    expired = maintenance.expire_deferred(ctx.store, deferred_since(ctx.store, ctx.settings, ctx.registry, ctx.date), ctx.now)
    report = maintenance.queue_report(ctx.store, ctx.date)
    lines = [f"- superseded deferred units: {len(superseded)}" + (f" ({', '.join(superseded)})" if superseded else ""),
             f"- expired deferred units: {len(expired)}" + (f" ({', '.join(expired)})" if expired else ""),
             f"- deferred units waiting to be re-offered: {report['deferred_waiting']}",
             "- work units today: " + (", ".join(f"{k} {v}" for k, v in report["units_today"].items()) or "none"),
             "- research queue: " + (", ".join(f"{k} {v}" for k, v in report["research_queue"].items()) or "empty")]
    artifact = _report(ctx, "queue_report", f"Queue report {ctx.date} {ctx.phase}", lines)
    return ActionResult(success=True, message=f"expired {len(expired)} deferred unit(s); "
                                              f"{report['deferred_waiting']} deferred waiting",
                        artifacts=[artifact] + [Artifact(type="work_unit", id=u, title="expired") for u in expired],
                        data=report)


def health_check(ctx: HandlerContext) -> ActionResult:
    problems = {k: v for k, v in maintenance.consistency_problems(ctx.store).items() if v}
    latest = max(v for v, _, _ in schema.MIGRATIONS)
    version = schema.current_version(ctx.store)
    if version != latest:
        problems[f"schema at version {version}, code expects {latest}"] = 1
    _, registry_errors = read_registry_file(ctx.settings.actions_file or DEFAULT_REGISTRY_FILE,
                                            ctx.settings.handler_modules)
    if registry_errors:
        problems["registry errors: " + "; ".join(registry_errors[:3])] = len(registry_errors)
    stuck = maintenance.units_running_since(ctx.store, ctx.now - STUCK_AFTER)
    if stuck:
        problems[f"units running for over {STUCK_AFTER}: {', '.join(stuck[:5])}"] = len(stuck)
    lines = [f"- {name}: {count}" for name, count in problems.items()] or ["- all checks passed"]
    checked = len(maintenance.CONSISTENCY_CHECKS) + 3
    artifact = _report(ctx, "health_report", f"Health check {ctx.date} {ctx.phase}", lines)
    return ActionResult(success=True, message=f"{checked} checks, {len(problems)} problem(s)"
                                              + (": " + "; ".join(problems) if problems else ""),
                        artifacts=[artifact], data={"problems": problems})


def release_stale_reservations(ctx: HandlerContext) -> ActionResult:
    """The recovery pass (core.recovery): paid answers of dead processes settled, their holds given
    back, their interrupted actions reset. (Without a Dagster instance here, run state is not
    consulted; every run and the budget sensor also recover with it.)"""
    report = recover(ctx.store, ctx.settings.home, never_over, ctx.now)
    released = report.released
    return ActionResult(success=True, message=report.summary(),
                        artifacts=[Artifact(type="reservation", id=r, title="abandoned: its process died")
                                   for r in released], data={"released": released})
