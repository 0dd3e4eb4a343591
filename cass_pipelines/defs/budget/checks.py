"""Asset checks on `cost_records` (date|phase): the day's spend within the daily limit, every
category within its share, and the partition's ledger equal to its reconciled reservations (a
ledger row that bypassed the budget, or a reservation settled to the wrong cost, fails it)."""
# No `from __future__ import annotations`: Dagster inspects the check's context annotation at runtime.
from datetime import date
from typing import Callable

import dagster as dg

from cass_pipelines.defs.partitions import split_key
from cass_pipelines.defs.resources import CassResource
from cass_pipelines.domain.budget_rules import EPS
from cass_pipelines.domain.settings import Settings
from cass_pipelines.store.budget import budget_status, spend_figures

Verdict = tuple[bool, str, dict]


def spend_within_daily_limit(f: dict, s: Settings) -> Verdict:
    ok = f["day_spent_usd"] <= s.daily_budget_usd + EPS
    return ok, f"day spent ${f['day_spent_usd']:.4f} of ${s.daily_budget_usd:.2f}", {
        "day_spent_usd": f["day_spent_usd"], "daily_limit_usd": s.daily_budget_usd}


def categories_within_shares(f: dict, s: Settings) -> Verdict:
    over = {c: (v, s.category_limit(c)) for c, v in f["category_spent_usd"].items() if v > s.category_limit(c) + EPS}
    text = ", ".join(f"{c} ${v:.4f} > ${lim:.4f}" for c, (v, lim) in sorted(over.items())) or "every category within"
    return not over, text, {"over_share": dg.MetadataValue.json({c: list(v) for c, v in over.items()}),
                            "category_spent_usd": dg.MetadataValue.json(f["category_spent_usd"])}


def ledger_matches_reservations(f: dict, s: Settings) -> Verdict:
    gap = f["partition_ledger_usd"] - f["partition_reconciled_usd"]
    ok = abs(gap) <= EPS and f["partition_unreserved_rows"] == 0
    return ok, (f"ledger ${f['partition_ledger_usd']:.6f} vs reconciled ${f['partition_reconciled_usd']:.6f}; "
                f"{f['partition_unreserved_rows']} ledger row(s) without a reservation"), {
        "ledger_usd": f["partition_ledger_usd"], "reconciled_usd": f["partition_reconciled_usd"],
        "unreserved_rows": f["partition_unreserved_rows"]}


CHECKS: dict[str, tuple[str, Callable[[dict, Settings], Verdict]]] = {
    "spend_within_daily_limit": ("The date's LLM spend is within the daily limit.", spend_within_daily_limit),
    "categories_within_shares": ("Each category's spend on the date is within its share.", categories_within_shares),
    "ledger_matches_reservations": ("The partition's ledger total equals its reconciled reservations, and every "
                                    "ledger row was reserved.", ledger_matches_reservations),
}


def _build(name: str, description: str, verdict: Callable[[dict, Settings], Verdict],
           partitions: dg.PartitionsDefinition) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset="cost_records", name=name, description=description, partitions_def=partitions)
    def _check(context: dg.AssetCheckExecutionContext, cass: CassResource) -> dg.AssetCheckResult:
        rt = cass.runtime()
        day, phase = split_key(context.partition_key)
        passed, text, metadata = verdict(spend_figures(rt.store, date.fromisoformat(day), phase), rt.settings)
        return dg.AssetCheckResult(passed=passed, severity=dg.AssetCheckSeverity.ERROR,
                                   description=text, metadata=metadata)

    return _check


def build_cost_checks(partitions: dg.PartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    """The three checks on cost_records, for Definitions(asset_checks=...)."""
    return [_build(name, description, verdict, partitions) for name, (description, verdict) in CHECKS.items()]


def build_budget_check(partitions: dg.PartitionsDefinition) -> dg.AssetChecksDefinition:
    """Fails (severity WARN) once the date's budget is exhausted, so a Dagster alert policy on asset check
    failures, or a look at the asset's checks, shows the day that ran out; the phase runs themselves
    succeed (refused work is deferred, not failed)."""
    @dg.asset_check(asset="cost_records", name="budget_not_exhausted", partitions_def=partitions,
                    description="The date's budget can still fund work (the budget_sensor cancels queued "
                                "phase runs once it cannot).")
    def budget_not_exhausted(context: dg.AssetCheckExecutionContext, cass: CassResource) -> dg.AssetCheckResult:
        rt = cass.runtime()
        day, _ = split_key(context.partition_key)
        status = budget_status(rt.store, rt.settings, date.fromisoformat(day))
        return dg.AssetCheckResult(
            passed=not status["exhausted"], severity=dg.AssetCheckSeverity.WARN,
            description=(f"{day}: spent ${status['spent_usd']:.4f} of ${status['daily_limit_usd']:.2f}"
                         + (", budget exhausted" if status["exhausted"] else "")),
            metadata={"spent_usd": status["spent_usd"], "daily_limit_usd": status["daily_limit_usd"],
                      "remaining_usd": status["remaining_usd"], "refused_calls": status["refused_calls"]})

    return budget_not_exhausted
