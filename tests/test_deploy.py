"""deploy/: the Prometheus alert rules (checked and unit-tested by promtool) and the Grafana dashboard
refer only to metrics the exporter serves."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cass_pipelines.cli.main import main

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "cass-alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "cass-dashboard.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package `prometheus`; "
                                                              "./scripts/test.sh installs it when run as root)")


@needs_promtool
def test_promtool_accepts_the_rules_and_their_unit_tests_pass():
    check = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run([PROMTOOL, "test", "rules", "cass-alerts.test.yml"], cwd=RULES.parent,
                          capture_output=True, text=True, timeout=60)
    assert unit.returncode == 0 and "SUCCESS" in unit.stdout, unit.stdout + unit.stderr


def served_series_names(capsys) -> set[str]:
    assert main(["metrics", "--once"]) == 0
    names = set()
    for family in text_string_to_metric_families(capsys.readouterr().out):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(family.type, [""])
        names |= {family.name + s for s in suffixes}
    return names


def used_metrics(expr: str) -> set[str]:
    return set(re.findall(r"\bcass_[a-z0-9_]+", expr))


def test_rules_and_dashboard_use_only_served_metrics(sample_home, capsys):
    served = served_series_names(capsys)
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    alerts = {r["alert"] for r in rules}
    assert {"CassBudgetSoftLimit", "CassBudgetExhausted", "CassDeadLettersGrowing", "CassNoPlanForPhase",
            "CassRunsFailed"} <= alerts
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = set().union(*(used_metrics(e) for e in exprs + [r["expr"] for r in rules]))
    assert used and used <= served, used - served
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("work by category", "budget use", "cost by category and model", "cache-read", "dead letters"):
        assert topic in titles
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
