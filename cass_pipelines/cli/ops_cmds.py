"""metrics, ui: watching the agent from outside."""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from cass_pipelines.cli.output import CliError
from cass_pipelines.config.settings import load_settings
from cass_pipelines.domain.clock import clock_from_env
from cass_pipelines.services.runtime import require_initialised


def port(text: str) -> int:
    """A TCP port (argparse type): 0 to 65535, else a usage error naming the value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port: 0 to 65535")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("metrics", help="serve Prometheus metrics from the store (read-only)")
    p.add_argument("--port", type=port, default=9464, help="port on 127.0.0.1 (0: any free port); default 9464")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--once", action="store_true", help="print the metrics once and exit")
    p.set_defaults(func=cmd_metrics)

    p = sub.add_parser("ui", help="start the Dagster UI and daemon (dagster dev) for this CASS_HOME")
    p.add_argument("--port", type=port, default=3000, help="webserver port on 127.0.0.1; default 3000")
    p.set_defaults(func=cmd_ui)


def cmd_metrics(args: argparse.Namespace) -> int:
    from prometheus_client import generate_latest
    from prometheus_client.exposition import start_wsgi_server

    from cass_pipelines.execution import instance_for
    from cass_pipelines.metrics import registry_for

    settings = load_settings()
    require_initialised(settings)
    registry = registry_for(settings, clock_from_env(), instance=instance_for(settings))
    if args.once:
        sys.stdout.write(generate_latest(registry).decode())
        return 0
    try:
        server, _ = start_wsgi_server(args.port, addr=args.host, registry=registry)
    except OSError as exc:
        raise CliError(f"--port {args.port}: cannot listen on {args.host}: {exc.strerror}") from None
    print(f"serving metrics of {settings.db_path} on http://{args.host}:{server.server_port}/metrics", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        server.shutdown()


def cmd_ui(args: argparse.Namespace) -> int:
    from cass_pipelines.execution import instance_for, write_workspace
    from cass_pipelines.services.logs import json_logs

    settings = load_settings()
    require_initialised(settings)
    with instance_for(settings) as instance:       # installs dagster.yaml and creates the storage if needed
        home = Path(instance.root_directory)
    dagster = shutil.which("dagster", path=os.path.dirname(sys.executable)) or shutil.which("dagster")
    if dagster is None:
        raise CliError("the `dagster` command is not installed in this environment (pip install dagster-webserver)")
    command = [dagster, "dev", "-h", "127.0.0.1", "-p", str(args.port), "-w", str(write_workspace(home))]
    if json_logs():
        command += ["--log-format", "json"]
    env = {**os.environ, "DAGSTER_HOME": str(home), "CASS_HOME": str(settings.home.resolve())}
    print(f"Dagster UI on http://127.0.0.1:{args.port} (DAGSTER_HOME {home}, CASS_HOME {env['CASS_HOME']})",
          file=sys.stderr, flush=True)
    os.execve(dagster, command, env)   # dagster dev owns the terminal from here (Ctrl-C stops it)
