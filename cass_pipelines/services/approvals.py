"""Work that waits for a person: templates and actions marked `requires_approval`.

Such a unit is planned like any other. When its first gated action comes up, the unit stops in
`awaiting_approval` with an approval request saying what it would do and what it would cost.
A person approves (the unit goes back to `planned` and `approval_job` runs it through the same
claims, metering and budget as any run), rejects (the unit is cancelled with the reason), or lets
it expire (cancelled, reason recorded). Work a person asked for (`trigger`) needs no approval.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cass_pipelines.domain.goals import expires_at
from cass_pipelines.domain.registry import ActionDef, TemplateDef
from cass_pipelines.domain.states import ApprovalState, UnitOrigin, UnitStatus
from cass_pipelines.services.runtime import Runtime
from cass_pipelines.store import approvals, plans

# Units a person started themselves: asking for them was the approval.
PERSON_ORIGINS = (UnitOrigin.MANUAL, UnitOrigin.FORCED)


class ApprovalError(ValueError):
    """An approve/reject that cannot apply: an unknown unit, or a request not pending."""


def gated(template: TemplateDef, action: ActionDef, unit: dict, store) -> bool:
    """Whether this action of the unit must wait for a person's approval first."""
    if not (template.requires_approval or action.requires_approval) or unit["origin"] in PERSON_ORIGINS:
        return False
    seen: dict | None = unit
    request = None
    while seen is not None and request is None:   # work offered again as a new unit keeps its approval
        request = approvals.get(store, seen["id"])
        seen = plans.get_unit(store, seen["deferred_from"]) if seen["deferred_from"] else None
    return request is None or request["state"] != ApprovalState.APPROVED.value


def what_it_does(rt: Runtime, unit: dict, template: TemplateDef) -> str:
    steps = ", ".join(f"{a.id} ({a.description})" for a in rt.registry.template_actions(template.id))
    return f"{template.name} on '{unit['focus']}': {steps}"


def hold(rt: Runtime, unit: dict, template: TemplateDef, action: ActionDef, now: datetime) -> str:
    """Stop the unit in `awaiting_approval` and file its request (once). Returns the reason shown."""
    request = approvals.request(rt.store, work_unit_id=unit["id"], template_id=template.id, action_id=action.id,
                                what=what_it_does(rt, unit, template),
                                estimated_cost_usd=float(unit["estimated_cost_usd"]), now=now,
                                expires_at=expires_at(now))
    reason = (f"awaiting approval: {action.id} needs a person's approval (est. ${request['estimated_cost_usd']:.4f});"
              f" `cass-pipelines approvals approve {unit['id']}` by {request['expires_at']:%Y-%m-%d %H:%M %Z}")
    plans.set_unit_status(rt.store, unit["id"], UnitStatus.AWAITING_APPROVAL, now, reason=reason)
    return reason


@dataclass(frozen=True)
class Verdict:
    work_unit_id: str
    state: ApprovalState
    reason: str


def decide(rt: Runtime, work_unit_id: str, approve: bool, reason: str, by: str, now: datetime,
           run_id: str | None = None) -> Verdict:
    """Approve (the unit goes back to `planned`) or reject (cancelled with the reason) a pending request.
    An expired request is expired first, so a late approval is refused."""
    expire(rt, now)
    request = approvals.get(rt.store, work_unit_id)
    if request is None:
        raise ApprovalError(f"no approval request for work unit {work_unit_id!r}; see `cass-pipelines approvals list`")
    if request["state"] != ApprovalState.PENDING.value:
        raise ApprovalError(f"work unit {work_unit_id}: its approval request is {request['state']}"
                            + (f" ({request['reason']})" if request["reason"] else "") + "; nothing to decide")
    state = ApprovalState.APPROVED if approve else ApprovalState.REJECTED
    text = f"approved by {by}" + (f": {reason}" if reason else "") if approve else \
        f"rejected by {by}: {reason or 'no reason given'}"
    status = UnitStatus.PLANNED if approve else UnitStatus.CANCELLED
    if not approvals.decide(rt.store, work_unit_id, state, by=by, reason=text, now=now, unit_status=status,
                            run_id=run_id):
        raise ApprovalError(f"work unit {work_unit_id}: decided by someone else just now; see `approvals list`")
    return Verdict(work_unit_id, state, text)


def expire(rt: Runtime, now: datetime) -> list[str]:
    """Requests past their time are expired and their units cancelled, with the reason."""
    done = []
    for uid in approvals.overdue(rt.store, now):
        if approvals.decide(rt.store, uid, ApprovalState.EXPIRED, by="cass", reason="approval expired: no one "
                            "approved it in time", now=now, unit_status=UnitStatus.CANCELLED):
            done.append(uid)
    return done
