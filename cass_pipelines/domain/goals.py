"""Goals, the week, approvals and what the agent learns from its own work: types and pure rules.

No I/O: the store reads and writes the rows, services put them together. The learning digest is
bounded by construction (a fixed number of lines of clipped text), so the decision prompt does not
grow with history.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from cass_pipelines.domain.plan_rules import MAX_TEMPLATE_SHARE

# A unit that serves no goal says why; the decision schema's goal field is null (or this) then.
NO_GOAL = "none"
WEEK_GOALS = 3                   # goals a week focuses on, at most
MAX_ACTIVE_GOALS = 8             # goals shown to the weekly planner, at most
APPROVAL_TTL = timedelta(hours=48)
LEARNING_WINDOW_DAYS = 28        # statistics look back this far: bounded however long the history
DIGEST_BEST, DIGEST_WORST, DIGEST_GOALS = 3, 2, 3


def week_start(day: date) -> date:
    """Weeks start on Monday, in the agent's timezone (dates are already local)."""
    return day - timedelta(days=day.weekday())


def week_end(week: date) -> date:
    """The Sunday of the week starting on `week` (the day its journal is paid from)."""
    return week + timedelta(days=6)


def week_over(week: date, today: date) -> bool:
    """Whether the week starting on `week` has ended by `today` (the agent's date): its Sunday is past."""
    return week_end(week) < today


def ended_week(day: date, first: date) -> date | None:
    """The week whose journal is asked for on `day`: the one that ended on the Sunday before day's week;
    None when that is before the week of `first` (the first date partition: no week partition before it)."""
    week = week_start(day) - timedelta(days=7)
    return week if week >= week_start(first) else None


def expires_at(requested: datetime, ttl: timedelta = APPROVAL_TTL) -> datetime:
    return requested + ttl


def clip(text: object, limit: int) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class WorkStats:
    """Finished work of one template (or one goal) within the learning window."""
    key: str
    units: int
    completed: int
    failed: int
    cost_usd: float
    insights: int
    questions_raised: int
    questions_addressed_later: int
    rating: float | None        # the agent's own mean rating (1-5) from its summaries

    @property
    def completion_rate(self) -> float:
        return self.completed / self.units if self.units else 0.0

    @property
    def failure_rate(self) -> float:
        return self.failed / self.units if self.units else 0.0

    @property
    def cost_per_insight(self) -> float | None:
        return round(self.cost_usd / self.insights, 6) if self.insights else None

    @property
    def questions_addressed_rate(self) -> float | None:
        return self.questions_addressed_later / self.questions_raised if self.questions_raised else None

    def score(self) -> float:
        """0..1: how well this work has gone for me lately. Completion, few failures, my own rating,
        and insight for the money; a template with little history scores neutral (0.5)."""
        if self.units == 0:
            return 0.5
        rating = ((self.rating or 3.0) - 1) / 4
        value = min(1.0, self.insights / self.units / 3)   # about three insights a unit is plenty
        raw = 0.35 * self.completion_rate + 0.2 * (1 - self.failure_rate) + 0.3 * rating + 0.15 * value
        weight = min(1.0, self.units / 4)                  # trust the figures from four units on
        return round(0.5 + (raw - 0.5) * weight, 4)

    def as_dict(self) -> dict:
        return {"key": self.key, "units": self.units, "completed": self.completed, "failed": self.failed,
                "completion_rate": round(self.completion_rate, 3), "failure_rate": round(self.failure_rate, 3),
                "cost_usd": round(self.cost_usd, 6), "insights": self.insights,
                "cost_per_insight_usd": self.cost_per_insight,
                "questions_addressed_rate": (round(self.questions_addressed_rate, 3)
                                             if self.questions_addressed_rate is not None else None),
                "self_rating": round(self.rating, 2) if self.rating is not None else None,
                "score": self.score()}


def _line(s: WorkStats, name: str) -> str:
    cpi = f"${s.cost_per_insight:.3f}/insight" if s.cost_per_insight is not None else "no insights"
    rating = f", I rated it {s.rating:.1f}/5" if s.rating is not None else ""
    return (f"- {clip(name, 60)}: {s.completed}/{s.units} completed, {s.failed} failed, {cpi}{rating}")


def learning_digest(templates: list[WorkStats], goals: list[WorkStats], goal_titles: dict[str, str]) -> list[str]:
    """"What has worked for me lately": the best and worst templates and the goals with most
    work, a fixed number of short lines whatever the history's length."""
    ranked = sorted((s for s in templates if s.units), key=lambda s: (-s.score(), s.key))
    best = ranked[:DIGEST_BEST]
    worst = [s for s in reversed(ranked[DIGEST_BEST:]) if s.score() < 0.5][:DIGEST_WORST]
    lines = [f"{_line(s, s.key)} (worked well)" for s in best] + [f"{_line(s, s.key)} (went less well)" for s in worst]
    busy = sorted((g for g in goals if g.units), key=lambda s: (-s.units, s.key))[:DIGEST_GOALS]
    lines += [f"{_line(g, 'goal ' + goal_titles.get(g.key, g.key))}" for g in busy]
    return lines


def template_shares(template_ids: list[str]) -> dict[str, float]:
    total = len(template_ids)
    return {t: round(template_ids.count(t) / total, 3) for t in sorted(set(template_ids))} if total else {}


def over_share(template_ids: list[str], called_for: set[str]) -> list[str]:
    """Templates above MAX_TEMPLATE_SHARE of the units, except those the week's goals call for."""
    return [t for t, share in template_shares(template_ids).items()
            if share > MAX_TEMPLATE_SHARE and t not in called_for]
