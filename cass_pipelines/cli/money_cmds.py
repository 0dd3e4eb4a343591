"""budget, batches, pause, resume."""
import argparse
from datetime import date

from cass_pipelines.cli.output import MAX_TEXT_CHARS, bounded_text, emit, parse_date, table
from cass_pipelines.domain.categories import Category
from cass_pipelines.domain.clock import clock_from_env
from cass_pipelines.domain.phases import phase_at
from cass_pipelines.services.runtime import open_runtime, open_store
from cass_pipelines.store import batches
from cass_pipelines.store.budget import budget_status
from cass_pipelines.store.claims import never_over
from cass_pipelines.store.control import pause, paused_scopes, resume
from cass_pipelines.store.schema import migrate

CATEGORIES = [c.value for c in Category]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("budget", help="limits, spent, reserved, remaining, per category; exhausted and paused flags")
    p.add_argument("--date", help="YYYY-MM-DD budget day (default: today in the agent's timezone)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_budget)

    p = sub.add_parser("batches", help="batched model calls (memory, night work): batch id, state, held and billed")
    p.add_argument("--date", help="YYYY-MM-DD budget day (default: every day)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_batches)

    p = sub.add_parser("pause", help="stop new work (all, or one category); work in flight finishes")
    p.add_argument("--category", choices=CATEGORIES)
    p.add_argument("--reason", help=f"shown by schedules, status and deferred work (at most {MAX_TEXT_CHARS} "
                                    "characters)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_pause)

    p = sub.add_parser("resume", help="lift the global pause (or one category's, or --all)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--category", choices=CATEGORIES)
    which.add_argument("--all", action="store_true", help="lift every pause, global and per category")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_resume)


def render_budget(b: dict) -> str:
    flags = [f for f, on in (("EXHAUSTED", b["exhausted"]), (f"PAUSED ({b['pause_reason']})", b["paused"])) if on]
    lines = [f"Budget {b['date']} ({b['timezone']})" + (": " + ", ".join(flags) if flags else ""),
             f"  limit ${b['daily_limit_usd']:.2f} (emergency reserve ${b['reserve_usd']:.2f}, "
             f"${b['reserve_left_usd']:.4f} of it left)",
             f"  spent ${b['spent_usd']:.4f} ({b['spent_share']:.0%}), reserved ${b['reserved_usd']:.4f}, "
             f"remaining for ordinary work ${b['remaining_usd']:.4f}",
             f"  utilisation {b['utilisation']:.0%} of the usable ${b['daily_limit_usd'] - b['reserve_usd']:.2f}; "
             f"${b['spent_beyond_shares_usd']:.4f} spent beyond category shares (pooled room, reserve)",
             f"  reservations vs bills: median {_ratio(b['reservation_vs_bill']['median_ratio'])} over "
             f"{b['reservation_vs_bill']['calls']} call(s), {b['reservation_vs_bill']['breaches']} breach(es); "
             f"prompt tokens read from cache {b['cache']['read_share']:.0%}",
             "  batched calls: " + ", ".join(f"{n} {state}" for state, n in b["batches"].items()), ""]
    lines.append(table([[name, f"${c['limit_usd']:.4f}", f"${c['spent_usd']:.4f}", f"${c['reserved_usd']:.4f}",
                         f"${c['remaining_usd']:.4f}", c["paused"] or ""] for name, c in b["categories"].items()],
                       ["category", "limit", "spent", "reserved", "remaining", "paused"]))
    lines += [""] + [f"alert {a['kind']}: {a['message']}" for a in b["alerts"]]
    return "\n".join(lines)


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def cmd_budget(args: argparse.Namespace) -> int:
    from cass_pipelines.services.recovery import recover, stale

    settings, store = open_store()
    now = clock_from_env().now()
    day = parse_date(args.date, phase_at(now, settings)[0])
    with store.session():   # one open for the whole read (and a recovery only when something is stale)
        migrate(store)
        if stale(store, settings.home, never_over):
            recover(store, settings.home, never_over, now)
        status = budget_status(store, settings, day)
    emit(status, args.json, render_budget)
    return 0


def cmd_batches(args: argparse.Namespace) -> int:
    settings, store = open_store()
    migrate(store)
    rows = batches.listing(store, parse_date(args.date, date.min) if args.date else None)
    emit(rows, args.json, lambda rs: table(
        [[r["custom_id"], r["batch_id"] or "", r["state"], str(r["date"]), r["phase"] or "", r["action_id"] or "",
          _usd(r["reserved_usd"]), _usd(r["billed_usd"]), (r["error"] or "")[:60]] for r in rs],
        ["request", "batch", "state", "date", "phase", "action", "reserved", "billed", "error"]) if rs
        else "no batched calls")
    return 0


def _usd(value: float | None) -> str:
    return "" if value is None else f"${value:.6f}"


def _pauses(store) -> dict:
    scopes = paused_scopes(store)
    return {"paused": None in scopes, "reason": scopes.get(None),
            "categories": {k: v for k, v in scopes.items() if k is not None}}


def _render_pauses(d: dict) -> str:
    head = f"paused: {d['reason']}" if d["paused"] else "not paused"
    return head + "".join(f"\n  category {c} paused: {r}" for c, r in d["categories"].items())


def cmd_pause(args: argparse.Namespace) -> int:
    bounded_text("--reason", args.reason)
    rt = open_runtime(must_exist=True)
    migrate(rt.store)
    pause(rt.store, args.category, args.reason, clock_from_env().now())
    emit(_pauses(rt.store), args.json, _render_pauses)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    rt = open_runtime(must_exist=True)
    migrate(rt.store)
    lifted = resume(rt.store, args.category, clock_from_env().now(), everything=args.all)
    out = {**_pauses(rt.store), "resumed": lifted}
    emit(out, args.json, lambda d: (f"resumed {', '.join(d['resumed'])}" if d["resumed"] else "nothing to resume")
         + "\n" + _render_pauses(d))
    return 0
