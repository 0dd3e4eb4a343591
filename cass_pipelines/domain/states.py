"""Every state the store records, as enums (one source: no state literal outside this module; SQL
interpolates the members, e.g. f"status = '{UnitStatus.DEFERRED}'", which a StrEnum formats as its value)."""
from enum import StrEnum


class UnitStatus(StrEnum):
    PLANNED = "planned"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    DEFERRED = "deferred"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    AWAITING_APPROVAL = "awaiting_approval"   # gated work waits for a person (services/approvals.py)
    # A waiting unit of a `reoffer: latest` template whose work a later unit of it did (its reason names that
    # unit): never offered again nor expired, not waiting work (domain.phase_offer.superseded).
    SUPERSEDED = "superseded"

    @property
    def final(self) -> bool:
        """The unit is over for this offer (a deferred one may be offered again as a new unit)."""
        return self not in (UnitStatus.PLANNED, UnitStatus.RUNNING)


OPEN_UNIT_STATUSES = (UnitStatus.PLANNED, UnitStatus.RUNNING)
FINAL_UNIT_STATUSES = tuple(s for s in UnitStatus if s.final)


class ActionStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    DEFERRED = "deferred"
    SKIPPED = "skipped"
    INTERRUPTED = "interrupted"   # its run died mid-action; the next run of the unit starts it again


class DeferKind(StrEnum):
    """Why a unit waits, next to its human-readable reason (work_units.defer_kind)."""
    BUDGET = "budget"          # the day, a category or the pool cannot pay for it now
    PAUSED = "paused"          # a person paused everything or its category; `resume` takes it back
    PHASE_FULL = "phase_full"  # the phase has no room left for it
    NOT_IDLE = "not_idle"      # it needs the agent idle and the agent is not
    APPROVAL = "approval"      # older rows only: gated work now waits in awaiting_approval (services/approvals.py)
    GONE = "gone"              # its template is no longer in the registry
    BATCH = "batch"            # a call of it waits for its message batch: its phase resumes it, paid once
    BATCH_FAILED = "batch_failed"   # its message batch came back without an answer: offered again, asked afresh
    SKIPPED = "skipped"        # its phase did not run (skipped, or its time passed without a run)
    SAME_TEMPLATE = "same_template"   # the phase it was offered to has a unit of its template: a later one takes it


class ReservationStatus(StrEnum):
    HELD = "held"              # money set aside for a call in flight
    RECONCILED = "reconciled"  # settled to the bill (the ledger row is written)
    RELEASED = "released"      # the call failed or was not made: nothing spent
    ABANDONED = "abandoned"    # its owner died; released by recovery
    REFUSED = "refused"        # the request did not fit (kept for the budget's figures)
    LOWERED = "lowered"        # did not fit at its full output bound, then held at a lower one: paid for


class ClaimState(StrEnum):
    HELD = "held"          # the owner is doing the work
    DONE = "done"          # the work is finished; the key is never taken again
    RELEASED = "released"  # given back (deferred, interrupted): the next claimant may take it


class ClaimOutcome(StrEnum):
    ACQUIRED = "acquired"          # free, or already ours
    TAKEN_OVER = "taken_over"      # its owner died; now ours
    HELD_ELSEWHERE = "held_elsewhere"
    DONE = "done"


class DeadLetterKind(StrEnum):
    ACTION = "action"                 # an action of a work unit failed
    CONVERSATION = "conversation"     # a conversation's summary failed on every attempt


class RetryStatus(StrEnum):
    """How retrying a dead letter ended."""
    NOTHING_TO_DO = "nothing_to_do"   # unknown, already closed, or the work has since succeeded
    SUCCEEDED = "succeeded"
    FAILED = "failed"                 # it failed again (see the new dead letter) or was deferred


class DeadLetterState(StrEnum):
    OPEN = "open"
    RETRIED = "retried"        # a retry ran: its note says how it went (one that failed again left its own letter)
    DISCARDED = "discarded"    # a person decided it stays undone
    RESOLVED = "resolved"      # the work succeeded some other way (a later run, a re-offer)


class UnitOrigin(StrEnum):
    """Where a work unit came from (work_units.origin)."""
    PLAN = "plan"            # the day plan
    DEFERRED = "deferred"    # deferred work offered again
    MANUAL = "manual"        # asked for by hand (manual_work_job, trigger)
    FORCED = "forced"        # by hand, and run even while paused
    JOB = "job"              # a job's own unit (journal, memory catch-up)


class QueueHold(StrEnum):
    """A backfill run's place in the run queue (run tag `cass/queue`; dagster.yaml limits `held` to 0 runs)."""
    HELD = "held"      # waits until the runs of the backfill's earlier partitions are queued
    READY = "ready"    # released: the queue may start it in its turn


class GoalStatus(StrEnum):
    ACTIVE = "active"
    ACHIEVED = "achieved"
    CLOSED = "closed"          # given up or no longer wanted, with a reason


class GoalSource(StrEnum):
    AGENT = "agent"            # the agent made it from a growth edge or an open question
    PERSON = "person"          # `cass-pipelines goal add`


class ApprovalState(StrEnum):
    PENDING = "pending"        # its unit waits in `awaiting_approval`
    APPROVED = "approved"      # its unit went back to `planned` and approval_job ran it
    REJECTED = "rejected"      # its unit was cancelled with the reason
    EXPIRED = "expired"        # no one decided in time: its unit was cancelled
