"""The weekly report of `run-week`: the intention, goals advanced, the units by template and
category (and whether one template took over the week), spend per day, insights, the journals."""
from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from cass_pipelines.domain.goals import MAX_TEMPLATE_SHARE, over_share, template_shares, week_start
from cass_pipelines.domain.states import ApprovalState
from cass_pipelines.services.runtime import Runtime
from cass_pipelines.store import approvals, weeks
from cass_pipelines.store import goals as goal_store

MAX_INSIGHTS_SHOWN = 8


def week_report(rt: Runtime, first: date, last: date, runs: list[dict]) -> dict:
    with rt.store.session():
        units = goal_store.week_units(rt.store, first, last)
        starts = sorted({week_start(first + timedelta(days=n)) for n in range((last - first).days + 1)})
        intentions = [i for i in (goal_store.intention(rt.store, w) for w in starts) if i]
        chosen = {g for i in intentions for g in i["goal_ids"]}
        goals = {g["id"]: g for g in goal_store.goals(rt.store, limit=500)}
        counts = goal_store.progress_counts(rt.store, first, last)
        called_for = {t for g in chosen if g in goals for t in goals[g]["templates"]}
        templates = [u["template_id"] for u in units]
        categories = [u["category"] for u in units]
        found = weeks.insights(rt.store, first, last)
        waiting = [a for a in approvals.listing(rt.store, ApprovalState.PENDING.value) if first <= a["date"] <= last]
        report: dict[str, Any] = {
            "first": first.isoformat(), "last": last.isoformat(), "llm_mode": rt.llm_mode,
            "intentions": [{"week_start": i["week_start"].isoformat(), "intention": i["intention"],
                            "goal_ids": i["goal_ids"], "source": i["source"]} for i in intentions],
            "goals_advanced": [{"goal_id": g, "title": goals[g]["title"] if g in goals else g, "progress_notes": n,
                                "in_week_intention": g in chosen} for g, n in sorted(counts.items(),
                                                                                     key=lambda kv: (-kv[1], kv[0]))],
            "units": len(units),
            "units_naming_a_goal": sum(1 for u in units if u["goal_id"]),
            "units_continuing_a_thread": sum(1 for u in units if u["continues"]),
            "units_by_status": _counts([u["status"] for u in units]),
            "units_by_template": _counts(templates), "units_by_category": _counts(categories),
            "template_shares": template_shares(templates), "max_template_share": MAX_TEMPLATE_SHARE,
            "templates_over_share": over_share(templates, called_for),
            "spend_by_day": weeks.spend_by_day(rt.store, first, last),
            "insights": len(found), "insight_examples": found[:MAX_INSIGHTS_SHOWN],
            "awaiting_approval": [{"work_unit_id": a["work_unit_id"], "template_id": a["template_id"],
                                   "what": a["what"], "estimated_cost_usd": a["estimated_cost_usd"],
                                   "expires_at": a["expires_at"]} for a in waiting],
            "daily_journals": [{"date": d["date"].isoformat(), "tone": d["tone"]}
                               for d in weeks.daily_journals(rt.store, first, last)],
            "weekly_journals": [{"week_start": w.isoformat(), "text": j["text"], "tone": j["tone"],
                                 "offline": j["offline"]} for w in starts if (j := weeks.weekly_journal(rt.store, w))],
            "runs": runs,
        }
    report["goal_share"] = round(report["units_naming_a_goal"] / report["units"], 3) if report["units"] else 0.0
    report["spent_usd"] = round(sum(d["cost_usd"] for d in report["spend_by_day"].values()), 6)
    return report


def _counts(values: list[str]) -> dict[str, int]:
    return {k: values.count(k) for k in sorted(set(values), key=lambda k: (-values.count(k), k))}


def render_week(r: dict) -> str:
    lines = [f"The week {r['first']} to {r['last']} (LLM: {r['llm_mode']})", ""]
    for i in r["intentions"]:
        lines.append(f"Intention for the week of {i['week_start']} ({i['source']}): {i['intention']}")
    # What run-week's exit code says (4: a run or a unit failed) is named here; then, as run-day's report says
    # them, runs that ran but whose work waits (a pause or the budget deferred it) and runs not launched, and why.
    launched = [x for x in r["runs"] if not x.get("skipped")]
    failed = [x for x in launched if not x["success"]]
    units = [(x, f) for x in launched for f in x.get("failed_units", [])]
    waiting = [x for x in launched if x.get("waits")]
    skipped = [x for x in r["runs"] if x.get("skipped")]
    lines += ["", f"{len(launched)} Dagster runs, {len(failed)} failed, {len(units)} units failed, "
                  f"{len(waiting)} runs' work waits, {len(skipped)} runs skipped"
              + "".join(f"\n  FAILED {x['name']} {x['run_id'][:8]}: {x['error']}" for x in failed)
              + "".join(f"\n  unit failed in {x['name']}: {f[:200]}" for x, f in units)
              + "".join(f"\n  waits {x['name']} {x['run_id'][:8]}: {x['waits']}" for x in waiting)
              + "".join(f"\n  skipped {x['name']}: {x['skipped']}" for x in skipped)]
    lines += ["", "Goals advanced (progress notes this week):"]
    lines += [f"  {g['progress_notes']:>3}  {g['title']}" + ("" if g["in_week_intention"] else "  (not chosen this week)")
              for g in r["goals_advanced"]] or ["  none"]
    lines += ["", f"Units: {r['units']}; naming a goal: {r['units_naming_a_goal']} ({r['goal_share']:.0%}); "
                  f"continuing a thread: {r['units_continuing_a_thread']}",
              "  by status: " + ", ".join(f"{k} {v}" for k, v in r["units_by_status"].items()),
              "  by category: " + ", ".join(f"{k} {v}" for k, v in r["units_by_category"].items()),
              f"  by template (share; at most {r['max_template_share']:.0%} unless the week's goals call for it):"]
    lines += [f"    {t:<24} {n:>3}  {r['template_shares'][t]:.0%}" for t, n in r["units_by_template"].items()]
    if r["templates_over_share"]:
        lines.append("  over the share: " + ", ".join(r["templates_over_share"]))
    lines += ["", f"Spend: ${r['spent_usd']:.4f}"]
    lines += [f"  {d}  ${s['cost_usd']:.4f}  ({s['calls']} calls)" for d, s in r["spend_by_day"].items()]
    lines += ["", f"Insights: {r['insights']}"] + [f"  * {i[:160]}" for i in r["insight_examples"]]
    if r["awaiting_approval"]:
        lines += ["", "Awaiting approval (`cass-pipelines approvals approve UNIT` or `reject UNIT --reason R`):"]
        lines += [f"  {a['work_unit_id']}  {a['template_id']}  est ${a['estimated_cost_usd']:.4f}  "
                  f"expires {a['expires_at']:%Y-%m-%d %H:%M}" for a in r["awaiting_approval"]]
    lines += ["", "Daily journals: " + (", ".join(f"{d['date']} ({d['tone']})" for d in r["daily_journals"]) or "none")]
    for j in r["weekly_journals"]:
        lines += ["", f"Weekly journal, week of {j['week_start']} ({'offline' if j['offline'] else 'model'}; "
                      f"tone: {j['tone']}):", "  " + j["text"][:1200].replace("\n", "\n  ")]
    return "\n".join(lines)
