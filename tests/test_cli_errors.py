"""The CLI's errors are one line on stderr and a non-zero exit, never a traceback: an uninitialised
CASS_HOME (and nothing created in it), a --date outside the partitions, a database that cannot be
opened, a directory given to import-conversations."""
from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from support import NOW

from cass_pipelines.cli.main import main
from cass_pipelines.config.settings import load_settings
from cass_pipelines.domain.phases import phase_at
from cass_pipelines.domain.settings import PARTITION_WINDOW_DAYS
from cass_pipelines.store import db

CLI = str(Path(sys.executable).parent / "cass-pipelines")

NEEDS_INIT = [["plan"], ["summaries"], ["journal"], ["status"], ["budget"], ["ledger"], ["run-day"],
              ["run-phase", "morning"], ["trigger", "reflection_block"], ["pause"], ["resume"],
              ["plan", "--date", "2026-03-01", "--json"], ["status", "--json"]]


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def one_error_line(capsys, command: str) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cass-pipelines {command}: "), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    return lines[0]


@pytest.mark.parametrize("argv", NEEDS_INIT, ids=lambda a: " ".join(a))
def test_commands_on_an_uninitialised_home_say_run_init_and_create_nothing(cass_env, tmp_path, capsys, argv):
    home = Path(cass_env["CASS_HOME"])
    before = files_under(tmp_path)
    assert main(argv) == 2
    line = one_error_line(capsys, argv[0])
    assert line == (f"cass-pipelines {argv[0]}: no database at {home / 'cass.duckdb'}; "
                    "run 'cass-pipelines init' first")
    assert files_under(tmp_path) == before and not home.exists()


def test_the_console_script_on_an_uninitialised_home_prints_one_line(cass_env, tmp_path):
    before = files_under(tmp_path)
    proc = subprocess.run([CLI, "status"], capture_output=True, text=True, env=cass_env, timeout=60, check=False)
    expected = (f"cass-pipelines status: no database at {Path(cass_env['CASS_HOME']) / 'cass.duckdb'}; "
                "run 'cass-pipelines init' first")
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.splitlines() == [expected]
    assert files_under(tmp_path) == before


def test_commands_that_need_no_database_still_work_uninitialised(cass_env, tmp_path, capsys):
    before = files_under(tmp_path)
    assert main(["validate"]) == 0 and main(["catalog"]) == 0
    capsys.readouterr()
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("command", [["run-day"], ["run-phase", "morning"]], ids=["run-day", "run-phase"])
def test_a_date_outside_the_partitions_is_refused_with_the_allowed_range(sample_home, capsys, command):
    settings = load_settings()
    today = phase_at(NOW, settings)[0]   # the injected today
    first = today - timedelta(days=PARTITION_WINDOW_DAYS)   # no start_date: the last 30 days
    allowed = (f"dates run from {first} (the last 30 days) to today {today} ({settings.timezone}); "
               "set start_date in cass.toml for earlier days")
    for day in (first - timedelta(days=1), today + timedelta(days=1)):
        assert main([*command, "--date", day.isoformat()]) == 2
        line = one_error_line(capsys, command[0])
        assert line == f"cass-pipelines {command[0]}: --date {day}: no such partition; {allowed}"
    assert main([*command, "--date", "26-11-2026"]) == 2
    assert "--date: expected YYYY-MM-DD, got '26-11-2026'" in one_error_line(capsys, command[0])


def test_run_week_names_the_option_it_was_given(sample_home, capsys):
    today = phase_at(NOW, load_settings())[0]
    assert main(["run-week", "--start", (today + timedelta(days=1)).isoformat()]) == 2
    assert f"--start {today + timedelta(days=1)}: no such partition" in one_error_line(capsys, "run-week")
    start = today - timedelta(days=2)   # seven days from it end after today
    assert main(["run-week", "--start", start.isoformat(), "--days", "7"]) == 2
    assert (f"--start {start} with --days 7 ends on {start + timedelta(days=6)}: no such partition"
            in one_error_line(capsys, "run-week"))


@pytest.mark.parametrize("command", ["metrics", "ui"])
@pytest.mark.parametrize("port, why", [("70000", "70000 is not a port: 0 to 65535"), ("-1", "-1 is not a port"),
                                       ("http", "'http' is not a port number")])
def test_a_port_out_of_range_is_a_usage_error(sample_home, capsys, command, port, why):
    assert main([command, "--port", port]) == 2
    assert f"argument --port: {why}" in one_error_line(capsys, command)


def test_a_database_file_that_is_not_duckdb_is_a_database_error(cass_env, capsys):
    home = Path(cass_env["CASS_HOME"])
    home.mkdir()
    (home / "cass.duckdb").write_text("not a database\n", encoding="utf-8")
    assert main(["budget"]) == 1
    line = one_error_line(capsys, "budget")
    assert line.startswith("cass-pipelines budget: database error: IO Error: ")
    assert "not a valid DuckDB database file" in line


def test_a_database_locked_by_another_process_is_a_database_error_after_the_retries(sample_home, monkeypatch,
                                                                                    capsys):
    real_connect = db.connect
    monkeypatch.setattr(db, "connect", lambda path, deadline_s=0.0: real_connect(path, 0.3))   # retry briefly
    path = load_settings().db_path
    hold = "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["ledger"]) == 1
        line = one_error_line(capsys, "ledger")
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert line.startswith("cass-pipelines ledger: database error: IO Error: Could not set lock on file")
    assert "Conflicting lock is held" in line


def test_import_conversations_of_a_directory_says_so(sample_home, tmp_path, capsys):
    folder = tmp_path / "exports"
    folder.mkdir()
    assert main(["import-conversations", str(folder)]) == 2
    assert one_error_line(capsys, "import-conversations") == (
        f"cass-pipelines import-conversations: {folder}: is a directory; expected a JSONL file")
    assert main(["import-conversations", str(tmp_path / "missing.jsonl")]) == 2
    assert one_error_line(capsys, "import-conversations").endswith("missing.jsonl: no such file")


def test_import_conversations_into_an_uninitialised_home_creates_nothing(cass_env, tmp_path, capsys):
    path = tmp_path / "one.jsonl"
    path.write_text("{}\n", encoding="utf-8")
    before = files_under(tmp_path)
    assert main(["import-conversations", str(path)]) == 2
    assert "no database at" in one_error_line(capsys, "import-conversations")
    assert files_under(tmp_path) == before
