"""agserve's Grafana dashboard as code (grafanalib): `python deploy/grafana/dashboard.py` writes agserve.json beside it.

Never edit agserve.json by hand: tests/deploy/test_grafana_dashboard.py regenerates it and compares, and runs every panel's
query against a real Prometheus scraping a real gunicorn. Heavy queries read the recording rules of
deploy/prometheus/rules.yml, so Prometheus must load them.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from grafanalib._gen import DashboardEncoder
from grafanalib.core import (BarGauge, Dashboard, GridPos, RowPanel, Stat, Target, Template, Templating, Time,
                             TimeSeries)

OUTPUT = Path(__file__).resolve().parent / "agserve.json"
DATASOURCE = {"type": "prometheus", "uid": "agserve-prometheus"}  # provisioning/datasources/prometheus.yml
MODEL = 'model=~"$model"'
MODEL_VERSION = 'model=~"$model", version=~"$version"'
WIDTH = 24


def query(expr: str, legend: str = "", instant: bool = False, ref: str = "A") -> Target:
    return Target(expr=expr, legendFormat=legend, refId=ref, instant=instant, datasource=DATASOURCE)


def series(title: str, description: str, targets: list[Target], unit: str = "short", stacked: bool = False,
           width: int = 12) -> TimeSeries:
    return TimeSeries(title=title, description=description, dataSource=DATASOURCE, targets=targets, unit=unit,
                      stacking={"mode": "percent" if stacked else "none"}, fillOpacity=60 if stacked else 10,
                      legendDisplayMode="table", legendPlacement="right" if width == WIDTH else "bottom",
                      gridPos=GridPos(h=8, w=width, x=0, y=0))


def stat(title: str, description: str, targets: list[Target], unit: str = "short", width: int = 6) -> Stat:
    return Stat(title=title, description=description, dataSource=DATASOURCE, targets=targets, format=unit,
                reduceCalc="lastNotNull", graphMode="area", gridPos=GridPos(h=4, w=width, x=0, y=0))


def percentiles(recorded: str, by: str, selector: str = "") -> list[Target]:
    matchers = f"{{{selector}}}" if selector else ""
    return [query(f"agserve:{recorded}:p{p}_5m{matchers}", f"p{p} {by}", ref=ref)
            for p, ref in (("50", "A"), ("95", "B"), ("99", "C"))]


def rows() -> list[tuple[str, list]]:
    """(row title, panels) in the order an operator reads them: is it up and answering, how fast, what does it
    predict, are the inputs and answers still good, what is each process doing."""
    return [
        ("Traffic and errors", [
            series("Requests by route and status", "Answers per second (agserve_requests_total).",
                   [query(f"sum by (route, status) (agserve:requests:rate5m{{{MODEL}}})", "{{route}} {{status}}")],
                   "reqps"),
            series("Errors by route and status", "Answers that were not 2xx, per second: 4xx are the callers', "
                   "5xx the server's.",
                   [query(f'sum by (route, status) (agserve:requests:rate5m{{status!~"2..", {MODEL}}})',
                          "{{route}} {{status}}")], "reqps"),
            stat("Server errors (5xx share)", "Share of all answers that were 5xx over 5 minutes (the alert "
                 "AgserveHighErrorRate fires above 5 %).",
                 [query("agserve:request_errors:ratio_rate5m")], "percentunit"),
            stat("Rate-limited requests", "429 answers per second, by scope (AGSERVE_RATE_LIMIT_*).",
                 [query("sum(agserve:rate_limited:rate5m)", "429/s")], "reqps"),
            stat("Rows predicted", "Rows per second through the model (cache hits excluded).",
                 [query(f"sum(agserve:rows_predicted:rate5m{{{MODEL_VERSION}}})", "rows/s")], "short"),
            stat("Validation failures", "Requests per second refused by a model's input schema (422).",
                 [query(f"sum(rate(agserve_validation_failures_total{{{MODEL}}}[$__rate_interval]))", "422/s")],
                 "reqps"),
        ]),
        ("Latency and batching", [
            series("Request latency", "Whole request, by route (histogram agserve_request_seconds).",
                   percentiles("request_seconds", "{{route}}"), "s"),
            series("Model call latency", "One batched model call, by model and version.",
                   percentiles("model_call_seconds", "{{model}} v{{version}}", MODEL_VERSION), "s"),
            series("Batch size", "Mean rows and requests per model call (micro-batching).",
                   [query(f"agserve:batch_rows:mean5m{{{MODEL}}}", "rows {{model}}"),
                    query(f"agserve:batch_requests:mean5m{{{MODEL}}}", "requests {{model}}", ref="B")]),
            series("Cache hit ratio", "Rows answered from the prediction cache over rows looked up.",
                   [query(f"agserve:cache_hit:ratio_rate5m{{{MODEL}}}", "{{model}}")], "percentunit"),
        ]),
        ("Predictions", [
            series("Predicted class mix", "Share of each predicted label (classifiers).",
                   [query(f"agserve:predicted_class:share_rate5m{{{MODEL_VERSION}}}",
                          "{{model}} v{{version}} {{label}}")], "percentunit", stacked=True),
            BarGauge(title="Predicted values", description="Predictions of regressors (the median of quantile "
                     "models) by histogram bucket, over the dashboard's range.", dataSource=DATASOURCE,
                     targets=[Target(expr=f"sum by (le) (increase(agserve_prediction_value_bucket{{{MODEL_VERSION}}}"
                                          "[$__range]))", legendFormat="{{le}}", refId="A", instant=True,
                                     format="heatmap", datasource=DATASOURCE)],
                     orientation="vertical", displayMode="gradient", gridPos=GridPos(h=8, w=12, x=0, y=0)),
        ]),
        ("Drift and live quality", [
            series("Drift: PSI per feature", "Population stability index of each feature's recent inputs against "
                   "the version's reference data (flagged above 0.2).",
                   [query(f'agserve_drift{{statistic="psi", {MODEL_VERSION}}}', "{{model}} {{feature}}")]),
            series("Drift: shares per feature", "Unseen categories, out-of-range numbers and change in missing "
                   "values, as shares of the window's rows (flagged above 0.1).",
                   [query(f'agserve_drift{{statistic!="psi", {MODEL_VERSION}}}',
                          "{{model}} {{feature}} {{statistic}}")], "percentunit"),
            series("Live quality next to validation", "Eval metric on feedback over the quality window, beside "
                   "the validation score (higher is better).",
                   [query(f"agserve_live_score{{{MODEL_VERSION}}}", "{{model}} v{{version}} {{metric}} {{source}}")]),
            stat("Features flagged", "Features over a drift threshold now (AgserveInputDrift fires after 30 min).",
                 [query(f"sum(agserve_drift_features_flagged{{{MODEL_VERSION}}})", "flagged")], width=4),
            stat("Rows in the drift window", "Inputs the drift statistics are computed over.",
                 [query(f"sum(agserve_drift_window_rows{{{MODEL_VERSION}}})", "rows")], width=4),
            stat("Feedback outcomes", "Outcomes in the quality window (AgserveLiveQualityDrop needs 50).",
                 [query(f"sum(agserve_feedback_outcomes{{{MODEL_VERSION}}})", "outcomes")], width=4),
        ]),
        ("Processes and dependencies", [
            series("Process memory", "Resident memory of the gunicorn master and each worker.",
                   [query("agserve_process_resident_bytes", "{{instance}} {{role}} {{pid}}")], "bytes"),
            series("Process CPU", "CPU seconds per second of the gunicorn master and each worker.",
                   [query("rate(agserve_process_cpu_seconds_total[$__rate_interval])",
                          "{{instance}} {{role}} {{pid}}")], "percentunit"),
            stat("Database up", "1: this scrape's SELECT 1 reached the database.",
                 [query("min(agserve_database_up)", "database")]),
            stat("Redis up", "1: every worker reaches Redis (absent without AGSERVE_REDIS_URL).",
                 [query("min(agserve_redis_up)", "redis")]),
            stat("Worker starts (1 h)", "Workers started in the last hour: restarts, recycling and reloads.",
                 [query("sum(increase(agserve_worker_starts_total[1h]))", "starts")]),
            stat("Records lost (1 h)", "Requests the prediction log or the monitoring store could not keep.",
                 [query("sum by (store) (increase(agserve_records_lost_total[1h]))", "{{store}}")]),
        ]),
    ]


def layout(sections: list[tuple[str, list]]) -> list:
    """Rows and their panels placed left to right, wrapping at the grid's width."""
    placed, y, panel_id = [], 0, 1
    for title, panels in sections:
        placed.append(RowPanel(title=title, id=panel_id, gridPos=GridPos(h=1, w=WIDTH, x=0, y=y)))
        panel_id, y, x, row_height = panel_id + 1, y + 1, 0, 0
        for panel in panels:
            width, height = panel.gridPos.w, panel.gridPos.h
            if x + width > WIDTH:
                x, y, row_height = 0, y + row_height, 0
            panel.gridPos, panel.id = GridPos(h=height, w=width, x=x, y=y), panel_id
            placed.append(panel)
            panel_id, x, row_height = panel_id + 1, x + width, max(row_height, height)
        y += row_height
    return placed


def variable(name: str, query_text: str) -> Template:
    return Template(name=name, label=name.capitalize(), query=query_text, dataSource=DATASOURCE, includeAll=True,
                    multi=True, allValue=".*", default="$__all", refresh=2, sort=1)


def dashboard() -> Dashboard:
    return Dashboard(
        title="agserve", uid="agserve", tags=["agserve"], timezone="utc", refresh="30s",
        description="Traffic, latency, batching, cache, predictions, drift, live quality and processes of agserve.",
        time=Time("now-3h", "now"), panels=layout(rows()),
        templating=Templating([
            variable("model", "label_values(agserve_rows_predicted_total, model)"),
            variable("version", 'label_values(agserve_rows_predicted_total{model=~"$model"}, version)'),
        ]))


def render() -> str:
    """The dashboard's JSON, as committed."""
    return json.dumps(dashboard().to_json_data(), cls=DashboardEncoder, sort_keys=True, indent=2) + "\n"


if __name__ == "__main__":
    OUTPUT.write_text(render())
    sys.stdout.write(f"wrote {OUTPUT}\n")
