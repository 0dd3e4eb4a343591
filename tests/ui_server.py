"""`cass-pipelines ui` (a real `dagster dev`) started on a free port for the UI test and bench_backfill,
and its GraphQL API (what the UI's pages read). `dagster dev` ignores SIGINT/SIGTERM here, so its
process group is killed by id."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

CLI = [sys.executable, "-m", "cass_pipelines.cli.main"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{url}/graphql", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        out = json.loads(response.read())
    if "errors" in out:
        raise RuntimeError(out["errors"])
    return out["data"]


def location_loaded(url: str) -> bool:
    data = graphql(url, "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
                        "locationOrLoadError { __typename } } } } }")
    return any(e["name"] == "cass_pipelines" and e["loadStatus"] == "LOADED"
               and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
               for e in data["workspaceOrError"]["locationEntries"])


@contextmanager
def ui_server(env: dict[str, str], log_path: Path, deadline_s: float) -> Iterator[str]:
    """The UI's URL once the code location is loaded; RuntimeError (with the log's end) if it exits or
    does not load within `deadline_s`."""
    port = free_port()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([*CLI, "ui", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            started = time.perf_counter()
            while True:
                if proc.poll() is not None:
                    raise RuntimeError("dagster dev exited:\n" + log_path.read_text()[-3000:])
                try:
                    if location_loaded(url):
                        break
                except OSError:
                    pass
                if time.perf_counter() - started > deadline_s:
                    raise RuntimeError("dagster dev did not load the code location:\n" + log_path.read_text()[-3000:])
                time.sleep(1)
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGKILL)       # its own process group: dagster dev and every child
            proc.wait(timeout=30)
