"""Left running unattended: real subprocesses of the CLI against a loopback Messages API, killed with
SIGKILL at chosen moments (failpoints), run twice at once, fed a conversation the model refuses.

After each scenario the same invariants hold: every (unit, action) ran to completion in at most one
run, the ledger holds exactly the answers the server was paid for, no reservation is left held, no
unit is `running` without a live owner, and spend stays within the day's and categories' limits."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from support import NOW, SAMPLE_DAY, invariant_violations, seed_plan

from cass_pipelines.cli.main import main
from cass_pipelines.domain.clock import NOW_ENV
from cass_pipelines.services.runtime import open_runtime

CLI = [sys.executable, "-m", "cass_pipelines.cli.main"]
DAY = SAMPLE_DAY.isoformat()
KILLED = -9


def cli(env: dict, *args: str, failpoint: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    run_env = {**env, "PYTHONWARNINGS": "ignore"}
    if failpoint:
        run_env["CASS_FAILPOINT"] = failpoint
    return subprocess.run([*CLI, *args], env=run_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def api_home(sample_home, fake_anthropic, monkeypatch):
    """The sample agent on the real SDK, against the loopback server."""
    monkeypatch.setenv("CASS_LLM", "anthropic")
    return {**os.environ}, fake_anthropic


def one_call_at_a_time(env: dict) -> None:
    """One step and one call in flight when a failpoint kills the run: with more, an answer the server
    sent but the killed process never read is billed and cannot be in any client's ledger (its hold is
    released at recovery), and which call the kill comes after would depend on timing."""
    config = Path(env["CASS_HOME"]) / "cass.toml"
    config.write_text("step_concurrency = 1\nllm_concurrency = 1\n" + config.read_text(encoding="utf-8"),
                      encoding="utf-8")


def check_invariants(server=None, allow: tuple[str, ...] = ()) -> None:
    """Every invariant of support.invariant_violations holds (but those in `allow`), and spend is
    within the day's and each category's limit."""
    found = invariant_violations(open_runtime().store, server.answered if server else None)
    assert not {k: v for k, v in found.items() if v and k not in allow}, found
    budget = json.loads(cli_json("budget", "--date", DAY))
    assert budget["spent_usd"] <= budget["daily_limit_usd"]
    assert all(c["spent_usd"] <= c["limit_usd"] + 1e-9 for c in budget["categories"].values())


def cli_json(*args: str) -> str:
    import contextlib
    import io
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*args, "--json"]) == 0
    return out.getvalue()


def test_two_runs_of_one_partition_at_once_execute_each_action_once(api_home):
    env, server = api_home
    procs = [subprocess.Popen([*CLI, "run-phase", "morning", "--date", DAY, "--json"],
                              env={**env, "PYTHONWARNINGS": "ignore"}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [r[1][-1500:] for r in results]
    check_invariants(server)                                      # no (unit, action) paid by two runs
    rt = open_runtime()
    assert rt.store.scalar("SELECT count(*) FROM llm_ledger WHERE action_id = 'plan.decide'") == 1
    assert rt.store.scalar("SELECT count(*) FROM day_plans") == 1
    # Both runs end with every unit of the phase in a final state.
    statuses = {r["status"] for r in rt.store.all("SELECT status FROM work_units WHERE phase = 'morning'")}
    assert statuses <= {"completed", "deferred", "skipped", "cancelled"}, statuses


@pytest.mark.parametrize("failpoint", ["paid_before_ledger:3", "phase_planned"])
def test_a_run_killed_mid_phase_loses_nothing_paid_and_the_next_run_finishes(api_home, failpoint):
    env, server = api_home
    one_call_at_a_time(env)
    killed = cli(env, "run-phase", "morning", "--date", DAY, failpoint=failpoint)
    assert killed.returncode == KILLED, killed.stderr[-1500:]
    # Right after the kill, status is truthful: nothing counts as held or running for a dead process.
    status = json.loads(cli_json("status"))
    assert status["budget"]["reserved_usd"] == 0
    runs = {r["run_id"]: r["status"] for r in status["recent_runs"]}
    assert "STARTED" not in runs.values(), runs                   # the dead CLI run is marked failed
    again = cli(env, "run-phase", "morning", "--date", DAY)
    assert again.returncode == 0, again.stderr[-2000:]
    check_invariants(server, allow=("actions_paid_by_two_runs",))   # the killed action ran again
    rt = open_runtime()
    assert rt.store.scalar("SELECT count(*) FROM day_plans") == 1                 # planned once, paid once
    assert rt.store.scalar("SELECT count(*) FROM llm_ledger WHERE action_id = 'plan.decide'") == 1
    assert rt.store.scalar("SELECT count(*) FROM claims WHERE state = 'held'") == 0


@pytest.mark.parametrize("saved", [1, 10])
def test_a_run_killed_mid_memory_keeps_what_it_summarised(api_home, saved):
    env, server = api_home
    one_call_at_a_time(env)
    killed = cli(env, "run-day", "--date", DAY, "--phases", "morning", "--no-journal",
                 failpoint=f"memory_saved:{saved}")
    assert killed.returncode == KILLED, killed.stderr[-1500:]
    rt = open_runtime()
    # The summaries were stored as they arrived: those committed before the kill are kept (a batch's
    # answers arrive together, and their summaries commit together: after the 10th, usually all of
    # them, and the re-run only finishes the unit); the run's unit is left unfinished, its answers unused.
    assert rt.store.scalar("SELECT count(*) FROM conversation_summaries") >= saved
    assert rt.store.scalar("SELECT count(*) FROM llm_batches WHERE used") == 0
    again = cli(env, "run-day", "--date", DAY, "--phases", "morning", "--no-journal")
    assert again.returncode == 0, again.stderr[-2000:]
    check_invariants(server, allow=("actions_paid_by_two_runs",))   # the killed memory action went on
    per_conversation = rt.store.all("SELECT conversation_id, count(*) AS n FROM conversation_summaries GROUP BY ALL")
    assert len(per_conversation) == 56 and all(r["n"] == 1 for r in per_conversation)   # none stored twice
    # ... and none paid twice: the answers the killed run was handed and had not stored yet were not
    # used (an action's answers are used when it ends), so the re-run took them up, unpaid.
    assert rt.store.scalar("SELECT count(*) FROM llm_ledger WHERE action_id = 'memory.summarize_idle_conversations'") == 56
    assert rt.store.scalar("SELECT count(*) FROM llm_batches WHERE state = 'collected' AND NOT used") == 0


def test_a_refused_conversation_is_retried_then_parked_and_the_others_are_summarised(api_home, monkeypatch,
                                                                                    capsys):
    env, server = api_home
    rt = open_runtime()
    target = "conv_023"
    server.refuse_when.append(f"QUOTED conversation {target}")   # every prompt quoting that conversation
    from cass_pipelines.definitions import build_defs
    from cass_pipelines.execution import instance_for, run_memory
    defs, instance = build_defs(rt.settings, rt.registry), instance_for(rt.settings)
    for attempt, hours in enumerate((0, 2, 6), start=1):   # past each backoff (10, 20 min)
        monkeypatch.setenv(NOW_ENV, (NOW + timedelta(hours=hours)).isoformat())
        assert run_memory(defs, instance).success
        failure = rt.store.one("SELECT attempts, parked FROM item_failures WHERE item_id = ?", [target])
        assert failure["attempts"] == attempt and failure["parked"] == (attempt == 3)
    summarised = {r["conversation_id"] for r in rt.store.all("SELECT conversation_id FROM conversation_summaries")}
    assert len(summarised) == 55 and target not in summarised       # the 55 others, on the first run
    # Parked: it is no longer offered (no further attempt), and it waits as a dead letter.
    monkeypatch.setenv(NOW_ENV, (NOW + timedelta(days=1)).isoformat())
    assert run_memory(defs, instance).success
    assert rt.store.scalar("SELECT attempts FROM item_failures WHERE item_id = ?", [target]) == 3
    assert main(["dlq", "list", "--json"]) == 0
    letters = json.loads(capsys.readouterr().out)
    assert [(d["kind"], d["item_id"]) for d in letters] == [("conversation", target)]
    dl_id = letters[0]["id"]
    assert main(["dlq", "retry", dl_id, "--json"]) == 4               # still refused: it failed again
    assert json.loads(capsys.readouterr().out)["status"] == "failed"
    assert main(["dlq", "retry", dl_id, "--json"]) == 0               # that retry closed the letter
    assert json.loads(capsys.readouterr().out)["status"] == "nothing_to_do"
    # Once the model answers again, the memory job summarises it after its backoff.
    server.refuse_when.clear()
    monkeypatch.setenv(NOW_ENV, (NOW + timedelta(days=2)).isoformat())
    assert run_memory(defs, instance).success
    assert rt.store.scalar("SELECT count(*) FROM conversation_summaries WHERE conversation_id = ?", [target]) == 1
    assert rt.store.scalar("SELECT count(*) FROM item_failures WHERE kind = 'conversation'") == 0
    check_invariants(server)


def test_a_handler_that_exits_fails_its_unit_with_a_dead_letter_and_a_short_message(sample_home, capsys,
                                                                                     monkeypatch):
    import cass_pipelines.services.handlers.sessions as sessions

    def exits(ctx):
        raise SystemExit("handler called sys.exit")

    monkeypatch.setattr(sessions, "reflection", exits)
    rt = open_runtime()
    seed_plan(rt, SAMPLE_DAY, "morning", ["morning_reflection"])
    code = main(["run-phase", "morning", "--date", DAY, "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 4                                        # a unit failed: the documented exit code
    assert report["runs"][0]["failed_units"] and "SystemExit" in report["runs"][0]["failed_units"][0]
    unit = rt.store.one("SELECT status, error FROM work_units WHERE template_id = 'morning_reflection'")
    assert unit["status"] == "failed" and len(unit["error"]) < 300
    assert rt.store.scalar("SELECT count(*) FROM dead_letters WHERE state = 'open'") == 1


def test_a_dead_letter_whose_retry_was_deferred_by_a_pause_is_retried_after_the_resume(sample_home, capsys,
                                                                                        monkeypatch):
    """`dlq retry` while the unit's category is paused defers the unit and keeps the letter open; after
    `resume`, the next retry runs the unit (a deferred unit counted as finished: nothing ran, every retry
    answered with the stale pause reason, and the letter stayed open for good)."""
    import cass_pipelines.services.handlers.sessions as sessions
    from cass_pipelines.definitions import build_defs
    from cass_pipelines.execution import instance_for, run_phase
    from cass_pipelines.store import plans

    rt = open_runtime()
    instance, defs = instance_for(rt.settings), build_defs(rt.settings, rt.registry)
    real = sessions.reflection

    def crash(ctx):
        raise RuntimeError("simulated handler crash")

    monkeypatch.setattr(sessions, "reflection", crash)
    seed_plan(rt, SAMPLE_DAY, "morning", ["morning_reflection"])
    assert run_phase(defs, instance, SAMPLE_DAY, "morning").success
    [unit] = plans.units_for_phase(rt.store, SAMPLE_DAY, "morning")
    assert unit["status"] == "failed"
    dl_id = rt.store.scalar("SELECT id FROM dead_letters WHERE work_unit_id = ?", [unit["id"]])
    monkeypatch.setattr(sessions, "reflection", real)

    assert main(["pause", "--category", unit["category"], "--reason", "maintenance"]) == 0
    capsys.readouterr()
    assert main(["dlq", "retry", dl_id, "--json"]) == 4
    assert "not run now" in json.loads(capsys.readouterr().out)["message"]
    assert rt.store.scalar("SELECT state FROM dead_letters WHERE id = ?", [dl_id]) == "open"
    assert main(["resume", "--category", unit["category"]]) == 0
    capsys.readouterr()
    assert main(["dlq", "retry", dl_id, "--json"]) == 0, capsys.readouterr().out
    assert plans.get_unit(rt.store, unit["id"])["status"] == "completed"
    assert rt.store.scalar("SELECT state FROM dead_letters WHERE id = ?", [dl_id]) == "retried"
    # Closed, it keeps its record: discarding it now is refused, naming how it closed.
    assert main(["dlq", "discard", dl_id]) == 2
    assert f"dead letter {dl_id} is already retried (retried: unit" in capsys.readouterr().err
    assert rt.store.scalar("SELECT state FROM dead_letters WHERE id = ?", [dl_id]) == "retried"


def test_journal_resumed_after_its_batch_the_next_morning_takes_up_its_paid_answer(api_home):
    """SAMPLE_DAY's journal (a night unit: batched) outlasts its batch wait and is deferred for its batch.
    Once the batch ended, journal_resume_sensor writes it again the next morning: still as night work, on its
    own day, so its batched answer is found by its request and paid once."""
    from cass_pipelines.definitions import build_defs
    from cass_pipelines.domain.clock import clock_from_env
    from cass_pipelines.execution import instance_for, run_journal, run_memory
    from cass_pipelines.services.watches import watch_batches
    from cass_pipelines.store import plans

    env, server = api_home
    config = Path(env["CASS_HOME"]) / "cass.toml"
    config.write_text("batch_wait_s = 0.3\n" + config.read_text(encoding="utf-8"), encoding="utf-8")
    rt = open_runtime()
    defs, instance = build_defs(rt.settings, rt.registry), instance_for(rt.settings)
    assert run_memory(defs, instance).success   # the day's conversation summaries: the journal's material
    server.batch_delay_s = 3600
    run_journal(defs, instance, SAMPLE_DAY)
    uid = plans.unit_id(SAMPLE_DAY, "night", "journal")
    unit = plans.get_unit(rt.store, uid)
    assert (unit["status"], unit["defer_kind"]) == ("deferred", "batch"), unit
    server.batch_delay_s = 0
    watch_batches(rt.store, rt.settings, clock_from_env(), lambda run_id: True, lambda: rt.llm)
    assert run_journal(defs, instance, SAMPLE_DAY).success
    rows = rt.store.all("SELECT l.date, l.phase, l.batch, r.funding, l.action_id FROM llm_ledger l "
                        "LEFT JOIN reservations r ON r.id = l.reservation_id WHERE l.work_unit_id = ?", [uid])
    unused = rt.store.all("SELECT custom_id, state, used FROM llm_batches WHERE work_unit_id = ?", [uid])
    assert len(rows) == 1 and all(u["used"] for u in unused), (
        f"the journal's answer was paid in its batch, then asked again: ledger {rows}; batched requests {unused}")
