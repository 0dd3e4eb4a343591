"""Asset checks on `cost_records` (date|phase): the day's spend within the daily limit, every
category within its share, the partition's ledger equal to its reconciled reservations (a ledger
row that bypassed the budget, or a reservation settled to the wrong cost, fails it), and the day's
budget not exhausted (a warning)."""
# No `from __future__ import annotations`: Dagster inspects the check's context annotation at runtime.
from datetime import date
from typing import Callable

import dagster as dg

from cass_pipelines.domain.budget_rules import EPS
from cass_pipelines.domain.settings import Settings
from cass_pipelines.services.runtime import Runtime
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


BUDGET_CHECK = "budget_not_exhausted"
BUDGET_CHECK_DESCRIPTION = ("The date's budget can still fund work (the budget_sensor cancels queued phase runs "
                            "once it cannot). Fails with severity WARN once the date's budget is exhausted, so a "
                            "Dagster alert policy on check failures shows the day that ran out; the phase runs "
                            "themselves succeed (refused work is deferred, not failed).")


def budget_not_exhausted(status: dict, day: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=BUDGET_CHECK, asset_key="cost_records", passed=not status["exhausted"],
        severity=dg.AssetCheckSeverity.WARN,
        description=(f"{day}: spent ${status['spent_usd']:.4f} of ${status['daily_limit_usd']:.2f}"
                     + (", budget exhausted" if status["exhausted"] else "")),
        metadata={"spent_usd": status["spent_usd"], "daily_limit_usd": status["daily_limit_usd"],
                  "remaining_usd": status["remaining_usd"], "refused_calls": status["refused_calls"]})


def cost_check_specs(partitions: dg.PartitionsDefinition) -> list[dg.AssetCheckSpec]:
    """The four checks on cost_records. The cost_records step evaluates them (a Dagster step of their own
    costs more than their queries); each can still be run alone (the asset is subsettable)."""
    specs = [dg.AssetCheckSpec(name, asset="cost_records", description=description, partitions_def=partitions)
             for name, (description, _) in CHECKS.items()]
    specs.append(dg.AssetCheckSpec(BUDGET_CHECK, asset="cost_records", description=BUDGET_CHECK_DESCRIPTION,
                                   partitions_def=partitions))
    return specs


def cost_check_results(rt: Runtime, day: str, phase: str, wanted: set[str]) -> list[dg.AssetCheckResult]:
    """The results of the `wanted` checks of cost_records for the partition (read in the caller's open)."""
    results = []
    if wanted - {BUDGET_CHECK}:
        figures = spend_figures(rt.store, date.fromisoformat(day), phase)
        for name, (_, verdict) in CHECKS.items():
            if name in wanted:
                passed, text, metadata = verdict(figures, rt.settings)
                results.append(dg.AssetCheckResult(check_name=name, asset_key="cost_records", passed=passed,
                                                   severity=dg.AssetCheckSeverity.ERROR, description=text,
                                                   metadata=metadata))
    if BUDGET_CHECK in wanted:
        results.append(budget_not_exhausted(budget_status(rt.store, rt.settings, date.fromisoformat(day)), day))
    return results
