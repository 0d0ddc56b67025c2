"""deploy/prometheus/rules.yml: valid for the real promtool, unit-tested with synthetic series (every alert fires when it
should and stays silent when it should not), and shipped unchanged as the Prometheus Operator's PrometheusRule."""
from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.support.servers import ROOT

RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "rules.test.yml"
OPERATOR_RULE = ROOT / "deploy" / "k8s" / "monitoring" / "prometheus-rule.yaml"


def promtool(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: `make test` installs Debian's prometheus package"
    return subprocess.run([binary, *args], cwd=RULES.parent, capture_output=True, text=True, timeout=60)


def alerts() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"] if "alert" in rule]


def test_promtool_checks_the_rules():
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in yaml.safe_load(RULES.read_text())['groups'])} rules" in done.stdout


def test_promtool_unit_tests_pass():
    done = promtool("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_for_a_severity_a_runbook_and_cases_that_fire_and_stay_silent():
    cases: dict[str, set[bool]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], set()).add(bool(case["exp_alerts"]))
    for rule in alerts():
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["runbook"] and rule["annotations"]["summary"], rule["alert"]
        assert cases.get(rule["alert"]) == {True, False}, f"{rule['alert']} needs a firing and a silent case"


def test_the_operator_manifest_holds_the_same_groups():
    manifest = yaml.safe_load(OPERATOR_RULE.read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert manifest["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


@pytest.mark.parametrize("expr, replacement", [
    ("agserve:request_errors:ratio_rate5m > 0.05", "agserve:request_errors:ratio_rate5m > 0.005"),
    ("agserve_database_up == 0", "agserve_database_up < 2"),
])
def test_the_unit_tests_catch_a_broken_threshold(tmp_path, expr, replacement):
    """The silent cases are not decoration: a rule that fires too easily fails them."""
    text = RULES.read_text()
    assert expr in text
    (tmp_path / "rules.yml").write_text(text.replace(expr, replacement))
    (tmp_path / "rules.test.yml").write_text(RULE_TESTS.read_text())
    done = subprocess.run([shutil.which("promtool"), "test", "rules", "rules.test.yml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "FAILED" in done.stdout + done.stderr


def test_compose_prometheus_configuration_passes_promtool(tmp_path):
    """deploy/prometheus/prometheus.yml as compose mounts it: its rule file and key file put where promtool can see
    them, nothing else changed."""
    key = tmp_path / "metrics.key"
    key.write_text("agk_example")
    text = (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
    assert "/etc/prometheus/rules.yml" in text and "/etc/prometheus/metrics.key" in text
    config = tmp_path / "prometheus.yml"
    config.write_text(text.replace("/etc/prometheus/rules.yml", str(RULES))
                      .replace("/etc/prometheus/metrics.key", str(key)))
    done = promtool("check", "config", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
