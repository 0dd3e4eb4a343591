"""goal add|list|close, approvals list|approve|reject, run-week."""
import argparse
import getpass
from datetime import timedelta

from cass_pipelines.cli.day_cmds import _exit_code, _reader, _run_date, _setup, _today, day_runs, week_journal
from cass_pipelines.cli.output import EXIT_FAILED, EXIT_REFUSED, CliError, bounded_text, emit, parse_date, table
from cass_pipelines.domain.categories import PHASES
from cass_pipelines.domain.clock import clock_from_env
from cass_pipelines.domain.errors import shown
from cass_pipelines.domain.states import ApprovalState, DeferKind, GoalSource, GoalStatus, UnitStatus
from cass_pipelines.services.runtime import open_runtime
from cass_pipelines.store import approvals
from cass_pipelines.store import goals as goal_store
from cass_pipelines.store.schema import migrate

WEEK_DAYS = 7


def register(sub: argparse._SubParsersAction) -> None:
    goal = sub.add_parser("goal", help="the agent's goals: add, list, close").add_subparsers(
        dest="goal_command", required=True, metavar="ACTION")
    p = goal.add_parser("add", help="give the agent a goal")
    p.add_argument("title")
    p.add_argument("--criterion", required=True, help="how the agent will know it reached the goal")
    p.add_argument("--templates", default="", help="comma-separated templates that advance it (see `catalog`)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_goal_add)
    p = goal.add_parser("list", help="goals with their progress (active ones unless --all)")
    p.add_argument("--all", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_goal_list)
    p = goal.add_parser("close", help="close a goal: achieved, or given up with a reason")
    p.add_argument("goal_id")
    p.add_argument("--achieved", action="store_true")
    p.add_argument("--reason", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_goal_close)

    appr = sub.add_parser("approvals", help="work waiting for a person's approval").add_subparsers(
        dest="approvals_command", required=True, metavar="ACTION")
    p = appr.add_parser("list", help="approval requests (pending unless --all)")
    p.add_argument("--all", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_approvals_list)
    for name, helptext in (("approve", "approve a unit and run it now through approval_job"),
                           ("reject", "reject a unit (it is cancelled with the reason) through approval_job")):
        p = appr.add_parser(name, help=helptext)
        p.add_argument("work_unit_id")
        p.add_argument("--reason", required=name == "reject", default="")
        p.add_argument("--by", default="", help="who decides (default: the user name)")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=cmd_approvals_decide, approve=name == "approve")

    p = sub.add_parser("run-week", help="seven days through Dagster (week plan, phases, journals), then a weekly "
                                        "report")
    p.add_argument("--start", help="YYYY-MM-DD first day (default: six days before today, so the week ends today)")
    p.add_argument("--days", type=int, default=WEEK_DAYS, help="how many days (1 to 7; default 7)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run_week)


# ---- goals -------------------------------------------------------------------------------------

def cmd_goal_add(args: argparse.Namespace) -> int:
    bounded_text("title", args.title, 200)
    bounded_text("--criterion", args.criterion, 400)
    if not args.title.strip() or not args.criterion.strip():
        raise CliError("goal add: the title and --criterion must not be blank")
    rt = open_runtime(must_exist=True)
    migrate(rt.store)
    templates = [t.strip() for t in args.templates.split(",") if t.strip()]
    unknown = [t for t in templates if t not in rt.registry.templates]
    if unknown:
        raise CliError(f"--templates: unknown template(s) {', '.join(shown(t) for t in unknown)}; "
                       "see `cass-pipelines catalog`")
    now = clock_from_env().now()
    gid = goal_store.add_goal(rt.store, title=args.title.strip(), success_criterion=args.criterion.strip(),
                              source=GoalSource.PERSON.value, origin_ref=None, templates=templates, offline=False,
                              day=_today(rt)[0], now=now)
    emit(goal_store.get_goal(rt.store, gid), args.json, lambda g: f"goal {g['id']} added: {g['title']}")
    return 0


def cmd_goal_list(args: argparse.Namespace) -> int:
    from cass_pipelines.domain.goals import week_start  # imported where used: read commands start faster

    rt = _reader()
    today = _today(rt)[0]
    rows = goal_store.goals(rt.store, None if args.all else GoalStatus.ACTIVE.value)
    week = goal_store.intention(rt.store, week_start(today))
    out = [{**g, "this_week": bool(week and g["id"] in week["goal_ids"]),
            "progress": goal_store.progress(rt.store, g["id"], limit=3)} for g in rows]
    emit(out, args.json, lambda gs: "\n".join(
        f"{g['id']}  [{g['status']}{', this week' if g['this_week'] else ''}] {g['title']} ({g['source']})\n"
        f"    done when: {g['success_criterion']}"
        + "".join(f"\n    {p['date']}: {p['note'][:140]}" for p in g["progress"]) for g in gs)
        or "No goals yet (the agent makes some when it plans its week; or `cass-pipelines goal add`).")
    return 0


def cmd_goal_close(args: argparse.Namespace) -> int:
    bounded_text("--reason", args.reason)
    rt = open_runtime(must_exist=True)
    migrate(rt.store)
    goal = goal_store.get_goal(rt.store, args.goal_id)
    if goal is None:
        raise CliError(f"no goal {shown(args.goal_id)}; see `cass-pipelines goal list --all`")
    status = GoalStatus.ACHIEVED if args.achieved else GoalStatus.CLOSED
    if not goal_store.close_goal(rt.store, args.goal_id, status.value, args.reason, clock_from_env().now()):
        raise CliError(f"goal {args.goal_id} is {goal['status']}, not active; nothing to close")
    emit(goal_store.get_goal(rt.store, args.goal_id), args.json, lambda g: f"goal {g['id']} {g['status']}: "
                                                                         f"{g['close_reason']}")
    return 0


# ---- approvals ---------------------------------------------------------------------------------

def cmd_approvals_list(args: argparse.Namespace) -> int:
    from cass_pipelines.services.approvals import expire

    rt = open_runtime(must_exist=True)
    migrate(rt.store)
    expire(rt, clock_from_env().now())   # what is past its time shows as expired, not pending
    rows = approvals.listing(rt.store, None if args.all else ApprovalState.PENDING.value)
    emit(rows, args.json, lambda rs: table(
        [[r["work_unit_id"], r["state"], r["template_id"], f"${r['estimated_cost_usd']:.4f}",
          f"{r['expires_at']:%Y-%m-%d %H:%M}", (r["reason"] or r["what"])[:70]] for r in rs],
        ["unit", "state", "template", "estimate", "expires", "what / decision"]) if rs else "Nothing awaits approval.")
    return 0


def cmd_approvals_decide(args: argparse.Namespace) -> int:
    from cass_pipelines.execution import QUIET, execute, run_error, run_tags
    from cass_pipelines.services.approvals import expire

    bounded_text("--reason", args.reason)
    if not args.approve and not args.reason.strip():
        raise CliError("reject: --reason must not be blank")
    rt = open_runtime(must_exist=True)
    instance, defs = _setup(rt)
    expire(rt, clock_from_env().now())   # a request past its time is expired, not decided late
    request = approvals.get(rt.store, args.work_unit_id)
    if request is None:
        raise CliError(f"no approval request for {shown(args.work_unit_id)}; see `cass-pipelines approvals list`")
    if request["state"] != ApprovalState.PENDING.value:   # nothing to decide: no run for it
        raise CliError(f"work unit {args.work_unit_id}: its approval request is {request['state']}"
                       + (f" ({request['reason']})" if request["reason"] else "") + "; nothing to decide")
    config = {"work_unit_id": args.work_unit_id, "approve": args.approve, "reason": args.reason,
              "decided_by": args.by or getpass.getuser()}
    result = execute(defs, instance, "approval_job", {**QUIET, "ops": {"decide_approval": {"config": config}}},
                     run_tags(trigger="cli", **{"cass/work_unit": args.work_unit_id}))
    from cass_pipelines.store import plans

    out = {"run_id": result.run_id, "success": result.success, "error": run_error(result),
           "approval": approvals.get(rt.store, args.work_unit_id),
           "work_unit": plans.get_unit(rt.store, args.work_unit_id)}
    emit(out, args.json, lambda d: f"run {d['run_id'][:8]}: " + (
        d["error"] or f"{d['approval']['state']}; unit {d['work_unit']['id']} {d['work_unit']['status']}"
                      f" {d['work_unit']['error'] or ''}"))
    if not result.success:
        return EXIT_FAILED
    unit = out["work_unit"]
    if not args.approve or unit["status"] == UnitStatus.COMPLETED:
        return 0
    # As `trigger`: approved work the budget or a pause deferred was refused on its way, not failed.
    return EXIT_REFUSED if unit["defer_kind"] in (DeferKind.BUDGET, DeferKind.PAUSED) else EXIT_FAILED


# ---- run-week ----------------------------------------------------------------------------------

def _week_named(run: dict) -> dict:
    return {**run, "name": f"week {run['week']} {run['phase']}"}


def cmd_run_week(args: argparse.Namespace) -> int:
    from cass_pipelines.domain.goals import week_start
    from cass_pipelines.services.week_report import render_week, week_report

    rt = open_runtime(must_exist=True)
    if not 1 <= args.days <= WEEK_DAYS:
        raise CliError(f"--days: 1 to {WEEK_DAYS}, got {args.days}")
    today = _today(rt)[0]
    first = parse_date(args.start, today - timedelta(days=args.days - 1))
    last = first + timedelta(days=args.days - 1)
    # Every day must be a partition: from start_date up to today.
    named = f"--start {first}" if args.start else f"the week's first day, {first},"   # (--days back from today)
    _run_date(rt, first.isoformat(), "--start" if args.start else "the week's first day")
    _run_date(rt, last.isoformat(), f"{named} with --days {args.days} ends on")
    instance, defs = _setup(rt)
    runs: list[dict] = []
    # Each day as run-day runs it, which plans its week first and writes the journal of the week before.
    for n in range(args.days):
        day = first + timedelta(days=n)
        runs += [{**r, "name": f"{r.get('date', day)} {r['phase']}"} if "week" not in r else _week_named(r)
                 for r in day_runs(rt, defs, instance, day, list(PHASES), journal=True)]
    # The last week has no Monday after it among these days: its journal now, if it is over (written once).
    runs += [_week_named(r) for r in week_journal(rt, defs, instance, week_start(last), today)]
    report = week_report(rt, first, last, runs)
    emit(report, args.json, render_week)
    return _exit_code(runs)
