"""dlq list | show | retry | discard: the dead-letter queue (failed actions, parked items)."""
from __future__ import annotations

import argparse

from cass_pipelines.cli.output import CliError, bounded_text, emit, table
from cass_pipelines.domain.clock import clock_from_env
from cass_pipelines.domain.states import DeadLetterState, RetryStatus
from cass_pipelines.services.runtime import open_runtime
from cass_pipelines.store import dead_letters

EXIT_RETRY_FAILED = 4   # the retry ran and the work failed again (or could not run now)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dlq", help="dead letters: failed actions and items parked after their retries")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    v = verbs.add_parser("list", help="open dead letters, newest first")
    v.add_argument("--all", action="store_true", help="also those retried, discarded or resolved")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_list)
    for name, func, helptext in (("show", cmd_show, "one dead letter in full"),
                                 ("retry", cmd_retry, "run its work again (same claim, same budget) "
                                                      "through dead_letter_retry_job"),
                                 ("discard", cmd_discard, "close it without retrying; kept for the record")):
        v = verbs.add_parser(name, help=helptext)
        v.add_argument("id", help="the dead letter's id (see `dlq list`)")
        if name == "discard":
            v.add_argument("--reason", default="discarded by the operator")
        v.add_argument("--json", action="store_true")
        v.set_defaults(func=func)


def _line(d: dict) -> list:
    what = f"{d['work_unit_id']} {d['action_id']}" if d["kind"] == "action" else f"{d['kind']} {d['item_id']}"
    return [d["id"], d["state"], d["created_at"].strftime("%Y-%m-%d %H:%M"), what, d["error"][:80]]


def cmd_list(args: argparse.Namespace) -> int:
    rt = open_runtime(must_exist=True)
    rows = dead_letters.listing(rt.store, include_closed=args.all)
    emit(rows, args.json, lambda rs: table([_line(r) for r in rs], ["id", "state", "created", "what", "error"])
         if rs else "no dead letters" + ("" if args.all else " open"))
    return 0


def _get(rt, dl_id: str) -> dict:
    row = dead_letters.get(rt.store, dl_id)
    if row is None:
        raise CliError(f"no dead letter {dl_id!r}; see `cass-pipelines dlq list --all`")
    return row


def cmd_show(args: argparse.Namespace) -> int:
    rt = open_runtime(must_exist=True)
    row = _get(rt, args.id)
    emit(row, args.json, lambda d: "\n".join(f"{k:13} {'' if v is None else v}" for k, v in d.items()))
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    from cass_pipelines.definitions import build_defs
    from cass_pipelines.execution import instance_for, run_dead_letter_retry, run_error

    rt = open_runtime(must_exist=True)
    row = _get(rt, args.id)
    if row["state"] != DeadLetterState.OPEN.value:
        emit({"dead_letter_id": args.id, "status": "nothing_to_do", "message": f"already {row['state']}",
              "run_id": None}, args.json, lambda d: f"{d['dead_letter_id']}: nothing to do ({d['message']})")
        return 0
    result = run_dead_letter_retry(build_defs(rt.settings, rt.registry), instance_for(rt.settings), args.id)
    outputs = [e.step_output_data.metadata for e in result.all_events if e.is_successful_output]
    out = {k: v.value for k, v in outputs[0].items()} if result.success and outputs else {
        "dead_letter_id": args.id, "status": RetryStatus.FAILED, "message": run_error(result) or "run failed"}
    out = {**out, "run_id": result.run_id}
    emit(out, args.json, lambda d: f"{d['dead_letter_id']}: {d['status']}: {d['message']} (run {d['run_id'][:8]})")
    return 0 if result.success else EXIT_RETRY_FAILED


def cmd_discard(args: argparse.Namespace) -> int:
    bounded_text("--reason", args.reason)
    rt = open_runtime(must_exist=True)
    row = _get(rt, args.id)
    if row["state"] != DeadLetterState.OPEN:   # (its record of how it closed is kept)
        raise CliError(f"dead letter {row['id']} is already {row['state']} ({row['note'] or 'no note'}); "
                       "only an open one can be discarded")
    dead_letters.set_state(rt.store, row["id"], DeadLetterState.DISCARDED, args.reason, clock_from_env().now())
    emit({"dead_letter_id": row["id"], "state": DeadLetterState.DISCARDED.value, "note": args.reason}, args.json,
         lambda d: f"{d['dead_letter_id']}: discarded ({d['note']})")
    return 0
