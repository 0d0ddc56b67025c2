"""deploy/grafana: the committed dashboard is what its code generates, compose provisions it, and every panel's query
and every recording rule returns data from a real Prometheus scraping a real 2-worker gunicorn after real traffic."""
from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import shutil
import subprocess
import time

import pytest
import requests
import yaml

from agserve.client import Client
from tests.support.data import FEATURES, to_records
from tests.support.redisserver import redis_server
from tests.support.servers import ROOT, free_port, gunicorn, stop

GRAFANA = ROOT / "deploy" / "grafana"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
# What Grafana puts in place of its variables: the "All" choice of model and version (allValue ".*").
VARIABLES = {"$model": ".*", "$version": ".*", "$__rate_interval": "1m", "$__range": "1h"}


def generator():
    spec = importlib.util.spec_from_file_location("agserve_dashboard", GRAFANA / "dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def committed() -> dict:
    return json.loads((GRAFANA / "agserve.json").read_text())


def panels(dashboard: dict) -> list[dict]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def substitute(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


def test_the_committed_dashboard_is_what_the_code_generates():
    assert generator().render() == (GRAFANA / "agserve.json").read_text(), \
        "agserve.json differs from its code: run .venv/bin/python deploy/grafana/dashboard.py"


def test_compose_provisions_the_dashboard_and_its_datasource():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    source = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())["datasources"][0]
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/agserve.yml").read_text())["providers"][0]
    dashboard = committed()
    uids = {target["datasource"]["uid"] for panel in panels(dashboard) for target in panel["targets"]}
    uids |= {variable["datasource"]["uid"] for variable in dashboard["templating"]["list"]}
    assert uids == {source["uid"]} and source["url"] == "http://prometheus:9090"
    grafana, prometheus = compose["grafana"], compose["prometheus"]
    mounted = f"./deploy/grafana/agserve.json:{provider['options']['path']}/agserve.json:ro"
    assert mounted in grafana["volumes"] and "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in \
        grafana["volumes"]
    assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == \
        f"{provider['options']['path']}/agserve.json"
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert "./deploy/prometheus/rules.yml:/etc/prometheus/rules.yml:ro" in prometheus["volumes"]
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    key_file = config["scrape_configs"][0]["authorization"]["credentials_file"]
    assert any(volume.startswith("./deploy/prometheus/metrics.key:" + key_file) for volume in prometheus["volumes"])
    assert config["rule_files"] == ["/etc/prometheus/rules.yml"]
    assert config["scrape_configs"][0]["static_configs"][0]["targets"] == ["api:8000"]
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"model", "version"}


@contextlib.contextmanager
def prometheus(tmp_path, target: str, key: str):
    """Debian's prometheus on a free loopback port, scraping target every second and evaluating rules.yml."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: `make test` installs Debian's prometheus package"
    port = free_port()
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "rule_files": [str(RULES)],
              "scrape_configs": [{"job_name": "agserve", "authorization": {"credentials": key},
                                  "static_configs": [{"targets": [target]}]}]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    process = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                                f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                                "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "prometheus exited"
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{base}/-/ready", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "prometheus never became ready"
            time.sleep(0.1)
        yield base
    finally:
        stop(process)


def instant(base: str, expr: str) -> dict:
    answer = requests.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success" and not answer.get("warnings"), (expr, answer)
    return answer["data"]


def traffic(server, dataset) -> None:
    """Predictions of every problem type (twice: the second time from the cache), feedback, a refused row, an
    unknown model and a rate-limited admin call."""
    client = Client(server.base, key=server.key)
    rows = dataset[1].head(60)
    for name in ("binary", "multiclass", "regression", "quantile"):
        for _ in range(2):
            answers = client.predict(rows[FEATURES], model=name)
    answers = client.predict(rows[FEATURES], model="binary")
    assert client.feedback(answers.attrs["prediction_ids"], rows["y_binary"].tolist()) == len(rows)
    session = server.session()
    bad = to_records(rows[FEATURES].head(1))
    bad[0]["cnt"] = "many"
    assert session.post(f"{server.base}/models/binary/predict", json={"data": bad}).status_code == 422
    assert session.post(f"{server.base}/models/nothing/predict", json={"data": bad}).status_code == 404
    assert [session.get(f"{server.base}/admin/alerts").status_code for _ in range(2)] == [200, 429]


@pytest.mark.server
def test_every_panel_and_recording_rule_has_data_in_a_real_prometheus(repository_path, dataset, tmp_path):
    dashboard = committed()
    queries = {f"{panel['title']} / {target['refId']}": substitute(target["expr"])
               for panel in panels(dashboard) for target in panel["targets"]}
    for variable in dashboard["templating"]["list"]:  # Grafana's label_values(metric, label), in plain PromQL
        metric, label = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]).groups()
        queries[f"variable {variable['name']}"] = f"group by ({label}) ({substitute(metric)})"
    records = [rule["record"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
               if "record" in rule]
    queries.update({f"rule {record}": record for record in records})

    with redis_server() as redis, gunicorn(repository_path, workers=2, AGSERVE_REDIS_URL=redis.url,
                                           AGSERVE_PREDICTION_LOG_DIR=str(tmp_path / "predictions"),
                                           AGSERVE_RATE_LIMIT_ADMIN="1/minute") as server, \
            prometheus(tmp_path, server.base.removeprefix("http://"), server.key) as base:
        traffic(server, dataset)
        empty = dict(queries)
        deadline = time.monotonic() + 30
        while empty and time.monotonic() < deadline:
            empty = {name: expr for name, expr in empty.items() if not instant(base, expr)["result"]}
            time.sleep(0.5)
        targets = requests.get(f"{base}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        rules = requests.get(f"{base}/api/v1/rules", timeout=10).json()["data"]["groups"]
        workers = instant(base, 'count(agserve_process_resident_bytes{role="worker"})')["result"]

    assert not empty, f"panels or rules without data: {sorted(empty)}"
    assert [t["health"] for t in targets] == ["up"]
    assert [(r.get("name"), r["health"], r.get("lastError")) for g in rules for r in g["rules"]
            if r["health"] != "ok"] == []
    assert workers[0]["value"][1] == "2"
