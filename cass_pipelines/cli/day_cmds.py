"""run-day, run-phase, plan, summaries, journal, status, trigger."""
import argparse
import sys
import time
from datetime import date
from typing import Any

from cass_pipelines.cli.output import EXIT_REFUSED, MAX_TEXT_CHARS, CliError, bounded_text, emit, parse_date, table
from cass_pipelines.domain.categories import PHASES, Category
from cass_pipelines.domain.clock import clock_from_env
from cass_pipelines.domain.errors import shown
from cass_pipelines.domain.pauses import unit_pause_reason
from cass_pipelines.domain.phases import phase_at
from cass_pipelines.domain.settings import PARTITION_WINDOW_DAYS, SettingsError
from cass_pipelines.domain.states import DeferKind, UnitStatus
from cass_pipelines.services.runtime import Runtime, open_runtime, open_store
from cass_pipelines.store import dead_letters, ledger, plans, views
from cass_pipelines.store.budget import budget_status
from cass_pipelines.store.control import paused_reason, paused_scopes
from cass_pipelines.store.schema import bring_forward, migrate


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run-day", help="materialise the day's phases in order through Dagster, then report")
    p.add_argument("--date", help="YYYY-MM-DD (default: today in the agent's timezone)")
    p.add_argument("--phases", help="comma-separated subset, e.g. morning,afternoon")
    p.add_argument("--no-journal", action="store_true",
                   help="write no journal: not this day's after the night, nor an earlier day's left deferred, "
                        "nor the journal of the week that ended")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run_day)

    p = sub.add_parser("run-phase", help="materialise one phase through Dagster")
    p.add_argument("phase", choices=PHASES)
    p.add_argument("--date")
    p.add_argument("--replan", action="store_true", help="re-ask the agent for this and the remaining phases")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run_phase)

    for name, helptext, func in [("plan", "the day's plan and the status of each unit", cmd_plan),
                                 ("summaries", "the day's work summaries", cmd_summaries),
                                 ("journal", "the day's journal entry", cmd_journal)]:
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--date")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=func)

    p = sub.add_parser("status", help="paused?, LLM mode, current phase, plan progress, runs, dead letters, budget")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("trigger", help="run one work unit now through manual_work_job")
    p.add_argument("template")
    p.add_argument("--focus", default="", help=f"what the unit is about (at most {MAX_TEXT_CHARS} characters)")
    p.add_argument("--phase", choices=PHASES, default="")
    p.add_argument("--force", action="store_true", help="run even while paused (budget limits still apply)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_trigger)


def _setup(rt: Runtime) -> tuple[Any, Any]:   # (DagsterInstance, Definitions): imported late, for start-up
    """Dagster instance and definitions for this (initialised) CASS_HOME, once what a run needs is
    there (prices, an API key, writable homes): a run must not fail on what can be checked now."""
    from cass_pipelines.definitions import build_defs
    from cass_pipelines.execution import instance_for
    from cass_pipelines.services.preflight import run_problems  # not for read commands

    problems = run_problems(rt.settings)
    if problems:
        raise SettingsError(problems)
    migrate(rt.store)
    return instance_for(rt.settings), build_defs(rt.settings, rt.registry)


def _today(rt: Runtime):
    return phase_at(clock_from_env().now(), rt.settings)


def _run_date(rt: Runtime, text: str | None, option: str = "--date") -> date:
    """The date partition to run: `option`'s date or today; it must exist (start_date to today, the agent's
    timezone). `option` is what the error names (run-week: the day its --start and --days make)."""
    today = _today(rt)[0]
    day = parse_date(text, today)
    latest = clock_from_env().now().astimezone(rt.settings.tz).date()   # the newest partition (execution.execute)
    first = rt.settings.first_date(latest)
    if not first <= day <= latest:
        since = f"start_date {first}" if rt.settings.start_date else f"{first} (the last {PARTITION_WINDOW_DAYS} days)"
        raise CliError(f"{option} {day}: no such partition; dates run from {since} to today {latest} "
                       f"({rt.settings.timezone}); set start_date in cass.toml for earlier days")
    return day


EXIT_WORK_FAILED = 4   # run-day / run-phase: a run failed or a work unit failed (see the report)
STATUS_DEAD_LETTERS = 5   # status lists the newest open dead letters, and counts them all


def _run_report(rt: Runtime, name: str, result, seconds: float) -> dict:
    from cass_pipelines.execution import run_error, run_waits

    costs = ledger.totals(rt.store, run_id=result.run_id)
    failed = [f"{u['id']}: {u['error']}" for u in plans.units_for_run(rt.store, result.run_id) if u["status"] == UnitStatus.FAILED]
    return {"phase": name, "run_id": result.run_id, "success": result.success, "error": run_error(result),
            "seconds": round(seconds, 2), "cost_usd": round(float(costs["cost_usd"]), 6), "calls": int(costs["calls"]),
            "failed_units": failed, "waits": run_waits(result) if result.success else None}


def _exit_code(runs: list[dict]) -> int:
    """0 when every run succeeded and no unit failed (work a run left waiting, and runs skipped, included: a
    later run takes it up); EXIT_WORK_FAILED otherwise (the report says what)."""
    return 0 if all(r["success"] and not r.get("failed_units") for r in runs) else EXIT_WORK_FAILED


def _timed(rt: Runtime, name: str, launch) -> dict:
    started = time.perf_counter()
    result = launch()
    return _run_report(rt, name, result, time.perf_counter() - started)


def day_report(rt: Runtime, day, runs: list[dict], journal: dict | None) -> dict:
    # plan_view is imported where it is used: status and budget do without it (~0.1 s of start-up)
    from cass_pipelines.services.plan_view import plan_view

    return {"date": day.isoformat(), "llm_mode": rt.llm_mode, "runs": runs, "plan": plan_view(rt, day),
            "journal": journal, "budget": budget_status(rt.store, rt.settings, day),
            "database": str(rt.settings.db_path), "artifacts": views.artifact_counts(rt.store)}


def render_report(r: dict) -> str:
    from cass_pipelines.services.plan_view import render_plan

    lines = [f"{r['date']}: the agent's day (LLM: {r['llm_mode']})", ""]
    # A run of another day or of a week says which (the week's intention and the week before's journal: its Monday).
    of = [f"of week {x['week']} " if x.get("week") else f"of {x['date']} " if x.get("date") else "" for x in r["runs"]]
    # A run not launched is skipped; one whose work a pause or the budget deferred waits; both with the reason.
    lines += [f"run {x['phase']:<9} {where}skipped: {x['skipped']}" if x.get("skipped") else
              f"run {x['phase']:<9} {where}" + ("(resumed) " if x.get("resumed") else "")
              + (f"waits: {x['waits']}\n    " if x.get("waits") else "")
              + f"{'ok ' if x['success'] else 'FAILED'} {x['run_id'][:8]}  {x['seconds']:>6.2f}s  "
              f"{x['calls']:>3} LLM calls  ${x['cost_usd']:.4f}" + (f"\n    {x['error']}" if x['error'] else "")
              + "".join(f"\n    unit failed: {f[:200]}" for f in x.get("failed_units", []))
              for x, where in zip(r["runs"], of)]
    lines += ["", render_plan(r["plan"]), ""]
    if r["journal"]:
        lines += [f"Journal ({'offline' if r['journal']['offline'] else 'model'}; tone: {r['journal']['tone']}):",
                  "  " + r["journal"]["text"][:400].replace("\n", "\n  "), ""]
    b = r["budget"]
    lines.append(f"Budget: spent ${b['spent_usd']:.4f} of ${b['daily_limit_usd']:.2f}, reserved ${b['reserved_usd']:.4f}, "
                 f"remaining ${b['remaining_usd']:.4f} (the ${b['reserve_usd']:.2f} emergency reserve apart)"
                 + ("  EXHAUSTED" if b["exhausted"] else "")
                 + ("  PAUSED" if b["paused"] else ""))
    lines += [f"  alert ({a['kind']}): {a['message']}" for a in b.get("alerts", [])]
    lines.append(f"Artifacts in {r['database']}: " + ", ".join(f"{k} {v}" for k, v in r["artifacts"].items()))
    lines.append("See them in the UI: dagster dev -w workspace.yaml (same DAGSTER_HOME), or "
                 "`cass-pipelines plan|summaries|journal|ledger --date " + r["date"] + "`.")
    return "\n".join(lines)


def cmd_run_day(args: argparse.Namespace) -> int:
    rt = open_runtime(must_exist=True)
    day = _run_date(rt, args.date)
    phases = [p.strip() for p in args.phases.split(",")] if args.phases else list(PHASES)
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        raise CliError(f"--phases: unknown phase(s) {shown(unknown)}; choose from {', '.join(PHASES)}")
    instance, defs = _setup(rt)
    runs = day_runs(rt, defs, instance, day, phases, journal="night" in phases and not args.no_journal,
                    earlier_journals=not args.no_journal)
    report = day_report(rt, day, runs, views.journal_entry(rt.store, day))
    emit(report, args.json, render_report)
    return _exit_code(runs)


def _skipped(name: str, reason: str) -> dict:   # a run not launched, and why (its work waits)
    return {"phase": name, "run_id": None, "success": True, "skipped": reason, "error": None,
            "seconds": 0.0, "cost_usd": 0.0, "calls": 0}


def week_run(rt: Runtime, defs, instance, job: str, week: date) -> dict:
    """A run of the week from `week` (week_job: "intention", week_journal_job: "journal"), as run-day and run-week
    launch it, reported like a phase's run with its `week`. Skipped with the reason, as a phase is, while
    paused, while its category is paused, or once the day that pays for it (services.week.plan_budget_day,
    journal_budget_day) is out of money: its call would be refused (the week is then not planned, or its journal
    not written, and a later day asks again). A call refused all the same (that day's share of its category
    spent) stores nothing either: the run succeeds and its report's `waits` says why."""
    from cass_pipelines.execution import run_week
    from cass_pipelines.run_queue import WEEK_INTENTION_JOB
    from cass_pipelines.services.planning import phase_skip_reason
    from cass_pipelines.services.week import (
        JOURNAL_CATEGORY,
        WEEK_CATEGORY,
        journal_budget_day,
        plan_budget_day,
    )

    intention = job == WEEK_INTENTION_JOB
    name, category, paid_from = (("intention", WEEK_CATEGORY, plan_budget_day) if intention
                                 else ("journal", JOURNAL_CATEGORY, journal_budget_day))
    paid_by = paid_from(rt.store, rt.settings, week, clock_from_env().now())
    paused = paused_reason(rt.store, category)
    held = phase_skip_reason(rt.store, rt.settings, paid_by) or (f"paused: {paused}" if paused else None)
    run = _skipped(name, held) if held else _timed(rt, name, lambda: run_week(defs, instance, job, week))
    return {**run, "week": week.isoformat()}


def week_journal(rt: Runtime, defs, instance, week: date, today: date) -> list[dict]:
    """The journal of the week from `week`, as week_journal_job writes it, unless written already or not to
    be written yet (services.week.journal_wait: the week not over, a daily journal of it still to come,
    nothing recorded); paid from its Sunday, or the day it is written if the Sunday could not pay."""
    from cass_pipelines.run_queue import WEEK_JOURNAL_JOB
    from cass_pipelines.services.week import journal_wait
    from cass_pipelines.store.weeks import weekly_journal

    if weekly_journal(rt.store, week) or journal_wait(rt.store, rt.settings, week, today):
        return []
    return [week_run(rt, defs, instance, WEEK_JOURNAL_JOB, week)]


def day_runs(rt: Runtime, defs, instance, day: date, phases: list[str], journal: bool,
             earlier_journals: bool = True) -> list[dict]:
    """A day through Dagster, as run-day does it: first what the daemon's schedules and sensors would have
    done by now (earlier journals left deferred with `earlier_journals`, earlier phases whose batches
    have ended), the memory run when conversations went idle (or a catch-up waits), the week's plan when it
    has none, each phase in order (unless paused or out of money), the journal, then (with
    `earlier_journals`) the journal of the week that ended before this day's."""
    from cass_pipelines.defs.budget.batch_sensor import failed_resumes
    from cass_pipelines.defs.resources import run_over
    from cass_pipelines.domain.goals import ended_week, week_start
    from cass_pipelines.execution import run_journal, run_memory, run_phase
    from cass_pipelines.llm.base import redact
    from cass_pipelines.run_queue import WEEK_INTENTION_JOB
    from cass_pipelines.services.handlers.memory import waiting_catchup
    from cass_pipelines.services.planning import phase_skip_reason
    from cass_pipelines.services.recovery import recover_if_stale
    from cass_pipelines.services.watches import (
        MAX_RESUME_FAILURES,
        batch_resumes,
        idle_conversations,
        waiting_journals,
        watch_batches,
        watch_budget,
    )
    from cass_pipelines.store.goals import intention

    clock = clock_from_env()
    runs = []

    def collect() -> None:
        """What batch_sensor does in the daemon: batches a dead or finished run stopped waiting for (a
        killed run's, whose work may not be asked again) are settled, paid once."""
        try:
            watch_batches(rt.store, rt.settings, clock, run_over(instance), lambda: rt.llm)
        except Exception as exc:   # noqa: BLE001 - an outage of the Batches API does not stop the day
            print(f"warning: collecting message batches failed ({redact(str(exc))[:300]}); the next run-day or "
                  "batch_sensor tries again", file=sys.stderr)

    # A dead run's leftovers first (as a run's first step does): its catch-up unit waits again, not running.
    recover_if_stale(rt, run_over(instance), clock.now())
    collect()
    # What journal_schedule does: an earlier day's journal left deferred (money, or a batch that outlasted
    # the wait) is written again; before the resumes below, whose new summaries would change its prompt
    # and so ask again instead of taking up the answer paid for it.
    paused = paused_reason(rt.store, None)
    today = clock.now().astimezone(rt.settings.tz).date()
    for earlier in [] if paused or not earlier_journals else waiting_journals(rt.store, rt.settings, day, today):
        runs.append({**_timed(rt, "journal", lambda d=earlier: run_journal(defs, instance, d)),
                     "date": earlier.isoformat()})
    # What batch_sensor asks for: an earlier phase whose work waited for message batches that have all
    # ended runs again, and that work resumes with the answers paid for it.
    for r in batch_resumes(rt.store, rt.settings, rt.registry, clock.now()):
        if (r.date == day and r.phase in phases) or failed_resumes(instance, r) >= MAX_RESUME_FAILURES:
            continue   # run below; or left to a person (batch_sensor's tick says so)
        runs.append({**_timed(rt, r.phase, lambda r=r: run_phase(defs, instance, r.date, r.phase,
                                                                  resume=r.attempt)),
                     "date": r.date.isoformat(), "resumed": True})
    # What idle_memory_sensor looks for, or a catch-up a dead run left unfinished (its answers wait for it).
    if idle_conversations(rt.store, rt.settings, clock.now(), limit=1) or waiting_catchup(rt.store):
        held = paused_reason(rt.store, Category.MEMORY)
        if held:
            runs.append(_skipped("memory", f"paused: {held}"))
        else:
            runs.append(_timed(rt, "memory", lambda: run_memory(defs, instance)))
            collect()
    # What weekly_intention_schedule does on Monday, on any day here (a user may start mid-week): the day's
    # plan is made with the week's intention and goals, so the week is planned before the day's phases.
    week = week_start(day)
    if intention(rt.store, week) is None:
        runs.append(week_run(rt, defs, instance, WEEK_INTENTION_JOB, week))
    alerts_seen: set[str] = set()
    for phase in sorted(phases, key=PHASES.index):
        reason = phase_skip_reason(rt.store, rt.settings, day)   # the same rule the phase schedules apply
        if reason:
            plans.defer_unopened(rt.store, day, phase, f"{phase} did not run: {reason}")   # its work waits
            runs.append(_skipped(phase, reason))
            continue
        runs.append(_timed(rt, phase, lambda: run_phase(defs, instance, day, phase)))
        # What budget_sensor does in the daemon (for the date run here): recovery, then alerts.
        watched = watch_budget(rt.store, rt.settings, rt.settings.home, day, clock.now(), run_over(instance),
                               alerts_seen)
        alerts_seen.update(kind for kind, _ in watched.new_alerts)
        collect()
    if journal:
        # (while paused its unit waits, deferred by the pause: journal_schedule's catch-up writes it after `resume`)
        runs.append(_timed(rt, "journal", lambda: run_journal(defs, instance, day)))
    # What weekly_journal_schedule asks for from the Monday after a week, each morning until it is written.
    ended = ended_week(day, rt.settings.first_date(today))
    if earlier_journals and ended:
        runs += week_journal(rt, defs, instance, ended, today)
    return runs


def cmd_run_phase(args: argparse.Namespace) -> int:
    from cass_pipelines.execution import run_phase
    from cass_pipelines.services.planning import phase_skip_reason

    rt = open_runtime(must_exist=True)
    day = _run_date(rt, args.date)
    instance, defs = _setup(rt)
    reason = phase_skip_reason(rt.store, rt.settings, day)   # the same rule the phase schedules apply
    if reason:
        raise CliError(f"{args.phase} {day} not run: {reason}", code=EXIT_REFUSED)
    run = _timed(rt, args.phase, lambda: run_phase(defs, instance, day, args.phase, replan=args.replan))
    report = day_report(rt, day, [run], views.journal_entry(rt.store, day))
    emit(report, args.json, render_report)
    return _exit_code([run])


def _reader() -> Runtime:
    """The runtime of a read command: a database of a newer schema refused, one an earlier release made
    migrated first (the reads select the current schema's columns)."""
    rt = open_runtime(must_exist=True)
    bring_forward(rt.store)
    return rt


def cmd_plan(args: argparse.Namespace) -> int:
    from cass_pipelines.services.plan_view import plan_view, render_plan

    rt = _reader()
    emit(plan_view(rt, parse_date(args.date, _today(rt)[0])), args.json, render_plan)
    return 0


def cmd_summaries(args: argparse.Namespace) -> int:
    rt = _reader()
    day = parse_date(args.date, _today(rt)[0])
    rows = views.summaries_for_day(rt.store, day)
    emit(rows, args.json, lambda rs: "\n\n".join(
        f"{r['phase']} {r['template_id']} ({r['status']}, ${r['cost_usd']:.4f}{', offline' if r['offline'] else ''})\n"
        f"  {r['narrative']}\n" + "".join(f"  * {i}\n" for i in r["key_insights"])
        + "".join(f"  ? {q}\n" for q in r["questions_raised"]) for r in rs) or f"No work summaries for {day}.")
    return 0


def cmd_journal(args: argparse.Namespace) -> int:
    rt = _reader()
    day = parse_date(args.date, _today(rt)[0])
    entry = views.journal_entry(rt.store, day)
    out = {"date": day.isoformat(), "text": entry["text"] if entry else None,
           "offline": bool(entry["offline"]) if entry else None, "tone": entry["tone"] if entry else None}
    emit(out, args.json, lambda d: d["text"] or f"No journal for {day} yet (journal_job writes it after the night).")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from cass_pipelines.llm.factory import resolve_mode
    from cass_pipelines.services.recovery import recover, stale
    from cass_pipelines.store import dagster_runs
    from cass_pipelines.store.claims import never_over

    settings, store = open_store()
    now = clock_from_env().now()
    day, phase = phase_at(now, settings)
    home = dagster_runs.dagster_home_path(settings.home)
    runs, runs_error, is_over = dagster_runs.recent_runs(home), None, dagster_runs.run_over(home)
    if runs is None or dagster_runs.runs_of_dead_processes(home) is not False:
        # Only Dagster can read this instance, or a crashed run must be marked failed: the slow path.
        try:
            from cass_pipelines.defs.resources import fail_dead_runs, run_over
            from cass_pipelines.execution import instance_for

            instance = instance_for(settings)
            fail_dead_runs(instance)          # status tells the truth right after a crash
            is_over = run_over(instance)
            runs = [{"run_id": r.run_id, "job": r.job_name, "status": r.status.value,
                     "partition": r.tags.get("dagster/partition", ""), "trigger": r.tags.get("cass/trigger", "")}
                    for r in instance.get_runs(limit=8)]
        except Exception as exc:   # a full disk, a read-only DAGSTER_HOME: status still shows the rest
            runs, is_over = [], never_over
            runs_error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    with store.session():   # one open for every read below (and a recovery only when something is stale)
        bring_forward(store)
        if stale(store, settings.home, is_over):
            recover(store, settings.home, is_over, now)
        units = plans.units_for_day(store, day)
        out: dict[str, Any] = {"paused": paused_reason(store, None), "llm_mode": resolve_mode(settings), "timezone": settings.timezone,
               "date": day.isoformat(), "current_phase": phase, "plan_progress": {},
               "recent_runs": runs, "recent_runs_error": runs_error,
               "dead_letters_open": dead_letters.open_count(store),
               "dead_letters": dead_letters.listing(store, limit=STATUS_DEAD_LETTERS),
               "budget": budget_status(store, settings, day),
               "database": str(settings.db_path), "dagster_home": str(home),
               "artifacts": views.artifact_counts(store)}
    progress = out["plan_progress"]
    for u in units:
        progress[u["status"]] = out["plan_progress"].get(u["status"], 0) + 1
    emit(out, args.json, lambda d: "\n".join([
        f"paused: {d['paused'] or 'no'}", f"LLM: {d['llm_mode']}",
        f"now: {d['date']} {d['current_phase']} ({d['timezone']})",
        "today's units: " + (", ".join(f"{k} {v}" for k, v in d["plan_progress"].items()) or "none planned yet"),
        f"budget: spent ${d['budget']['spent_usd']:.4f} of ${d['budget']['daily_limit_usd']:.2f}"
        + (" EXHAUSTED" if d["budget"]["exhausted"] else "")
        + "".join(f"\n  alert ({a['kind']}): {a['message']}" for a in d["budget"].get("alerts", [])),
        f"dead letters: {d['dead_letters_open']}"
        + (f" (the newest {len(d['dead_letters'])}: `dlq list`)" if d["dead_letters_open"] > len(d["dead_letters"]) else "")
        + "".join(
            f"\n  {x['id']} {x['work_unit_id'] or x['item_id']} {x['action_id'] or x['kind']}: {x['error'][:120]}"
            for x in d["dead_letters"]),
        "recent runs:\n" + (table([[r["run_id"][:8], r["job"], r["status"], r["partition"], r["trigger"]]
                                   for r in d["recent_runs"]], ["run", "job", "status", "partition", "trigger"])
                            if d["recent_runs"] else f"  unavailable: {d['recent_runs_error']}"
                            if d["recent_runs_error"] else "  none"),
        f"artifacts (DuckDB {d['database']}): " + ", ".join(f"{k} {v}" for k, v in d["artifacts"].items()),
        f"Dagster instance: {d['dagster_home']}"]))
    return 0


def cmd_trigger(args: argparse.Namespace) -> int:
    from cass_pipelines.execution import run_error, run_manual

    bounded_text("--focus", args.focus)
    rt = open_runtime(must_exist=True)
    template = rt.registry.templates.get(args.template)
    if template is None:
        raise CliError(f"unknown template {shown(args.template)}; see `cass-pipelines catalog`")
    instance, defs = _setup(rt)
    # (its category's pause, or one of a step that would stop it midway: domain.pauses.unit_pause_reason)
    paused = unit_pause_reason(paused_scopes(rt.store), rt.registry, template.id, template.category)
    if paused and not args.force:
        raise CliError(f"paused ({paused}); not triggering {args.template}. Use --force to run anyway, "
                       "or `cass-pipelines resume`.", code=EXIT_REFUSED)
    day = phase_at(clock_from_env().now(), rt.settings)[0]
    money = budget_status(rt.store, rt.settings, day)
    if money["exhausted"]:   # (--force lifts a pause, never the budget)
        raise CliError(f"daily budget exhausted for {day}: spent ${money['spent_usd']:.2f} of "
                       f"${money['daily_limit_usd']:.2f}; not triggering {args.template}", code=EXIT_REFUSED)
    result = run_manual(defs, instance, args.template, args.focus, args.phase, force=args.force)
    units = plans.units_for_run(rt.store, result.run_id)
    out = {"run_id": result.run_id, "success": result.success, "error": run_error(result),
           "work_unit": units[0] if units else None}
    emit(out, args.json, lambda d: (
        f"run {d['run_id'][:8]}: " + (f"unit {d['work_unit']['id']} {d['work_unit']['status']}"
                                      f" {d['work_unit']['reason'] or d['work_unit']['error'] or ''}"
                                      if d["work_unit"] else d["error"] or "no unit")))
    if units and units[0]["defer_kind"] in (DeferKind.BUDGET, DeferKind.PAUSED):   # refused on its way
        return EXIT_REFUSED
    return 0 if result.success and units and units[0]["status"] == UnitStatus.COMPLETED else 1
