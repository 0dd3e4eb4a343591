"""What the CLI shows: the plan, a day's report and status, assembled from the store (JSON-ready)."""
from datetime import date

from cass_pipelines.domain.categories import PHASES
from cass_pipelines.domain.goals import week_start
from cass_pipelines.domain.states import UnitStatus
from cass_pipelines.services.runtime import Runtime
from cass_pipelines.store import goals as goal_store
from cass_pipelines.store import plans


def plan_view(rt: Runtime, day: date) -> dict:
    """The `plan` JSON contract: source, intention, per phase the units with their actions, drops."""
    with rt.store.session():  # one connection for the whole view
        plan = plans.latest_day_plan(rt.store, day)
        week = goal_store.intention(rt.store, week_start(day))
        links = goal_store.unit_goals_for_day(rt.store, day)
        phases: dict[str, list] = {p: [] for p in PHASES}
        for unit in plans.units_for_day(rt.store, day):
            template = rt.registry.templates.get(unit["template_id"])
            runs = {r["position"]: r for r in plans.action_runs(rt.store, unit["id"])}
            sequence = template.action_sequence if template else ()
            phases[unit["phase"]].append({
                "work_unit_id": unit["id"], "template_id": unit["template_id"], "focus": unit["focus"],
                "motivation": unit["motivation"], "status": unit["status"], "reason": unit["reason"],
                "error": unit["error"], "origin": unit["origin"], "estimated_cost_usd": unit["estimated_cost_usd"],
                "cost_usd": round(sum(r["cost_usd"] for r in runs.values()), 6),
                "goal_id": links[unit["id"]]["goal_id"] if unit["id"] in links else None,
                "goal_note": links[unit["id"]]["goal_note"] if unit["id"] in links else None,
                "continues": links[unit["id"]]["continues"] if unit["id"] in links else None,
                "actions": [{"action_id": a, "status": runs[i]["status"] if i in runs else "pending",
                             "message": runs[i]["message"] if i in runs else ""} for i, a in enumerate(sequence)]})
        return {"date": day.isoformat(), "source": plan["source"] if plan else None,
                "day_intention": plan["day_intention"] if plan else None,
                "revision": plan["revision"] if plan else 0,
                "planned_from_phase": plan["planned_from_phase"] if plan else None,
                "week": {"week_start": week["week_start"].isoformat(), "intention": week["intention"],
                         "goal_ids": week["goal_ids"]} if week else None,
                "phases": phases,
                "dropped": [{"template_id": d["template_id"], "phase": d["phase"], "reason": d["reason"]}
                            for d in plans.drops_for_day(rt.store, day)]}


MARKS = {**{s: s.value for s in UnitStatus}, UnitStatus.COMPLETED: "done", UnitStatus.FAILED: "FAILED",
         UnitStatus.AWAITING_APPROVAL: "AWAITING APPROVAL"}


def render_plan(view: dict) -> str:
    if not view["source"]:
        return f"No plan for {view['date']} yet. Run `cass-pipelines run-phase PHASE --date {view['date']}`."
    lines = [f"Plan for {view['date']} (source: {view['source']}, revision {view['revision']}, "
             f"planned from {view['planned_from_phase']})", f"Intention: {view['day_intention']}"]
    if view.get("week"):
        lines.append(f"Week of {view['week']['week_start']}: {view['week']['intention']}")
    for phase, units in view["phases"].items():
        lines.append(f"\n{phase}:" + ("" if units else " (nothing)"))
        for u in units:
            note = u["error"] or u["reason"] or ""
            lines.append(f"  [{MARKS.get(u['status'], u['status'])}] {u['template_id']} — {u['focus']}"
                         f"  est ${u['estimated_cost_usd']:.3f}, spent ${u['cost_usd']:.4f}"
                         + (f"\n      {note}" if note else ""))
            if u["motivation"]:
                lines.append(f"      why: {u['motivation'][:160]}")
            if u.get("goal_note") is not None:
                lines.append(f"      goal: {u['goal_id'] or 'none'} ({u['goal_note'][:120]})"
                             + (f"; continues {u['continues']}" if u["continues"] else ""))
    if view["dropped"]:
        lines.append("\ndropped:")
        lines += [f"  {d['phase']} {d['template_id']}: {d['reason']}" for d in view["dropped"]]
    return "\n".join(lines)
