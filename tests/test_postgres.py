"""A phase run with the Dagster instance in a real PostgreSQL server (Debian's postgresql binaries,
a throwaway cluster in a temporary directory) configured by deploy/dagster-postgres.yaml."""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from support import NOW, SAMPLE_DAY

from cass_pipelines.domain.clock import NOW_ENV

ROOT = Path(__file__).resolve().parent.parent
PG_BIN = next((p for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
               if (p / "initdb").exists()), None) if Path("/usr/lib/postgresql").exists() else None
pytest.importorskip("dagster_postgres", reason="dagster-postgres not installed (pip install dagster-postgres)")
if PG_BIN is None:
    pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)", allow_module_level=True)


def as_postgres_user(command: list[str]) -> list[str]:
    """initdb refuses to run as root: run the server as the `postgres` account when we are root."""
    if os.geteuid() != 0:
        return command
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
    return [runuser, "-u", "postgres", "--", *command]


@pytest.fixture
def postgres():
    # Not under pytest's tmp_path: that is private to root, and the server runs as `postgres`.
    base = Path(tempfile.mkdtemp(prefix="cass-pg-"))
    data, sockets = base / "pgdata", base / "pgsock"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(sockets, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(as_postgres_user([str(PG_BIN / "initdb"), "-D", str(data), "-U", "dagster", "--auth=trust",
                                     "--no-sync"]), check=True, capture_output=True, timeout=120)
    subprocess.run(as_postgres_user([str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-t", "60", "-l",
                                     str(base / "pg.log"), "-o", f"-p {port} -k {sockets} -h 127.0.0.1 -F",
                                     "start"]), check=True, capture_output=True, timeout=120)
    try:
        subprocess.run([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "dagster", "dagster"],
                       check=True, capture_output=True, timeout=60)
        yield {"DAGSTER_PG_URL": f"postgresql+psycopg2://dagster@127.0.0.1:{port}/dagster"}
    finally:
        subprocess.run(as_postgres_user([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def test_a_phase_runs_with_the_instance_in_postgres(tmp_path, postgres):
    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster-postgres.yaml", home / "dagster.yaml")
    env = {**os.environ, **postgres, "CASS_HOME": str(tmp_path / "cass"), "DAGSTER_HOME": str(home),
           "CASS_LLM": "offline", NOW_ENV: NOW.isoformat()}
    cli = [sys.executable, "-m", "cass_pipelines.cli.main"]
    init = subprocess.run([*cli, "init", "--sample", "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert init.returncode == 0, init.stderr[-2000:]
    assert json.loads(init.stdout)["dagster_yaml"] == "kept"          # the user's PostgreSQL variant stays
    run = subprocess.run([*cli, "run-phase", "morning", "--date", SAMPLE_DAY.isoformat(), "--json"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    run_id = json.loads(run.stdout)["runs"][0]["run_id"]
    check = ("import dagster as dg\n"
             "i = dg.DagsterInstance.get()\n"
             "print(type(i.run_storage).__name__, i.get_run_by_id(sys.argv[1]).status.value,\n"
             "      len(i.get_materialized_partitions(dg.AssetKey('phase_work'))))\n")
    out = subprocess.run([sys.executable, "-c", "import sys\n" + check, run_id], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.split() == ["PostgresRunStorage", "SUCCESS", "1"], out.stderr[-2000:]
