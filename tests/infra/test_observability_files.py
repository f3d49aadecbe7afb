"""The alert rules (promtool where it is installed, else parsed), the Grafana dashboard, and
docs/operations.md agree with the metrics the processes really export."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from consumers.metrics import ConsumerMetrics
from gateway.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "infra" / "prometheus" / "alerts.yaml"
ALERT_TESTS = ROOT / "infra" / "prometheus" / "alerts.test.yaml"
DASHBOARD = ROOT / "infra" / "grafana" / "hareway-dashboard.json"
OPERATIONS = ROOT / "docs" / "operations.md"
# What PromQL adds to a metric's name.
_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def families(registry: CollectorRegistry) -> set[str]:
    return {metric.name for metric in registry.collect()}


def exported() -> dict[str, str]:
    """Every metric family name, with its type, as exported by the two processes."""
    found: dict[str, str] = {}
    for registry in (Metrics().registry, ConsumerMetrics().registry):
        for metric in registry.collect():
            found[metric.name] = metric.type
    return found


def referenced(expression: str) -> set[str]:
    names = set(re.findall(r"\b(hareway_[a-z0-9_]+)", expression))
    base = set()
    for name in names:
        for suffix in _SUFFIXES:
            if name.endswith(suffix) and name.removesuffix(suffix) in exported():
                name = name.removesuffix(suffix)
                break
        base.add(name)
    return base


def promtool() -> str | None:
    candidates = [os.environ.get("PROMTOOL"), str(ROOT / ".tools" / "bin" / "promtool")]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    return shutil.which("promtool")


def test_the_alert_rules_are_valid() -> None:
    tool = promtool()
    if tool is not None:
        result = subprocess.run(
            [tool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr
    # And by parsing, with or without promtool: what each rule must have.
    document = yaml.safe_load(ALERTS.read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    names = {rule["alert"] for rule in rules}
    for wanted in ("DeadLetters", "StoreDown", "503", "Confirm", "Lag", "PushBreaker"):
        assert any(wanted in name for name in names), f"no alert about {wanted}"
    for rule in rules:
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
        assert rule["annotations"]["summary"]
        unknown = referenced(rule["expr"]) - exported().keys()
        assert not unknown, f"{rule['alert']} uses metrics nobody exports: {unknown}"


@pytest.mark.timeout(60)
def test_the_alert_rules_fire_on_what_they_are_about() -> None:
    """infra/prometheus/alerts.test.yaml: promtool evaluates the rules over made-up series."""
    tool = promtool()
    assert tool is not None, (
        "promtool is needed to evaluate the alert rules: `make promtool` puts Debian's into "
        ".tools/bin (or install the `prometheus` package, or set PROMTOOL)"
    )
    result = subprocess.run(
        [tool, "test", "rules", str(ALERT_TESTS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Every alert about push subscriptions has a case there.
    tested = yaml.safe_load(ALERT_TESTS.read_text())
    cases = {case["alertname"] for test in tested["tests"] for case in test["alert_rule_test"]}
    rules = yaml.safe_load(ALERTS.read_text())["groups"]
    push = {rule["alert"] for group in rules for rule in group["rules"] if "Push" in rule["alert"]}
    assert push, "no push alert"
    assert push <= cases, push - cases


def test_the_dashboard_queries_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert expressions
    used: set[str] = set()
    for expression in expressions:
        used |= referenced(expression)
    assert not used - exported().keys(), used - exported().keys()
    # Every metric an operator may need is on it, the connection counters aside.
    assert exported().keys() - used <= {
        "hareway_broker_reconnects",
        "hareway_consumer_broker_reconnects",
        "hareway_consumer_refused_messages",
        "hareway_consumer_store_outages",
    }


def test_every_metric_is_documented() -> None:
    text = OPERATIONS.read_text()
    for name, kind in exported().items():
        shown = f"{name}_total" if kind == "counter" else name
        assert f"`{shown}`" in text, f"docs/operations.md does not document {shown}"


@pytest.mark.parametrize("path", [ALERTS, DASHBOARD])
def test_the_operations_doc_points_at_the_files(path: Path) -> None:
    assert str(path.relative_to(ROOT)) in OPERATIONS.read_text()
