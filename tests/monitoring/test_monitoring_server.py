"""Drift, feedback and alerts through a real 2-worker gunicorn, with a real SMTP server (STARTTLS + login), a real
webhook receiver and a dead channel, all on loopback."""
from __future__ import annotations

import statistics
import subprocess
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.data import FEATURES, mixed_frame, to_records
from tests.support.receivers import dead_server, self_signed_certificate, smtp_server, webhook_receiver
from tests.support.servers import eventually, gunicorn

REQUESTS, ROWS = 20, 20  # per phase: 400 rows, half through each worker


@pytest.fixture(scope="module")
def drift_repository(tmp_path_factory, predictor_dirs):
    """The binary model, imported with a large reference sample so that its statistics are sharp."""
    from app.inference import ModelRepository

    root = tmp_path_factory.mktemp("drift-repository")
    ModelRepository(root).import_predictor(predictor_dirs["binary"], "binary",
                                           reference=mixed_frame(n=3000, seed=100)[FEATURES])
    ModelRepository(root).activate("binary", "1")
    return root


def shifted(frame):
    frame = frame.copy()
    frame["num"] = frame["num"] + 6  # six standard deviations
    frame.loc[frame.index[::3], "color"] = "purple"  # a colour never seen in training
    return frame


def send_through_each_worker(server, frame) -> tuple[list[float], list[str]]:
    """REQUESTS requests of ROWS rows, the first half pinned to one worker and the rest to the other."""
    latencies, request_ids = [], []
    pids = server.worker_pids()
    for half, pid in enumerate(pids):
        # A fresh session per worker: a kept-alive connection would stay with the paused one.
        with server.only_worker(pid), server.session() as session:
            for index in range(half * REQUESTS // 2, (half + 1) * REQUESTS // 2):
                rows = frame.iloc[index * ROWS:(index + 1) * ROWS][FEATURES]
                started = time.perf_counter()
                answer = session.post(f"{server.base}/predict", json={"data": to_records(rows)}, timeout=30)
                latencies.append(time.perf_counter() - started)
                assert answer.status_code == 200, answer.text
                request_ids.append(answer.json()["request_id"])
    return latencies, request_ids


def rules_file(path, mailbox_port, ca_file, hook_url, dead_port):
    path.write_text(f"""
[channels.email]
host = "127.0.0.1"
port = {mailbox_port}
starttls = true
username = "alerts"
password_env = "TEST_SMTP_PASSWORD"
from = "agserve@example.test"
to = ["ops@example.test"]
ca_file = "{ca_file}"

[channels.webhook]
url = "{hook_url}"

[channels.dead]
type = "webhook"
url = "http://127.0.0.1:{dead_port}/hook"
timeout = 30

[[rules]]
name = "feature-drift"
metric = "drift_psi"
above = 0.2
cooldown_seconds = 3600

[[rules]]
name = "unseen-categories"
metric = "drift_unseen_share"
above = 0.1
cooldown_seconds = 3600

[[rules]]
name = "out-of-range"
metric = "drift_out_of_range_share"
above = 0.1
cooldown_seconds = 3600
""")
    return path


def test_drift_fires_one_alert_per_condition_by_email_and_webhook_and_a_dead_channel_slows_nothing(
        drift_repository, tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    with smtp_server(cert, key, "alerts", "s3cret") as mailbox, webhook_receiver() as hook, dead_server() as dead:
        rules = rules_file(tmp_path / "alerts.toml", mailbox.port, cert, hook.url, dead.port)
        with gunicorn(drift_repository, AGSERVE_ALERT_RULES=str(rules), AGSERVE_ALERT_INTERVAL="0.5",
                      AGSERVE_MONITOR_FLUSH_SECONDS="0.2", AGSERVE_DRIFT_MIN_ROWS="200",
                      TEST_SMTP_PASSWORD="s3cret") as server:
            pids = server.worker_pids()

            # Rows like the reference, half through each worker: the shared window holds all 400, nothing drifts.
            before, request_ids = send_through_each_worker(server, mixed_frame(n=400, seed=7))
            time.sleep(2)  # four evaluations
            session = server.session()
            report = session.get(f"{server.base}/admin/models/binary/drift").json()
            assert report["rows"] == REQUESTS * ROWS and report["enough_rows"], report
            assert report["drifted_features"] == [], report["features"]
            assert hook.posts == [] and mailbox.messages == [] and dead.connections == 0

            # Feedback reaches the prediction whichever worker answered it. SIGSTOP can freeze the other worker
            # while it holds SQLite's write lock (a flush); the documented 503 says retry, so retry after waking it.
            for _ in range(5):
                with server.only_worker(pids[1]), server.session() as other:
                    answer = other.post(f"{server.base}/feedback", json={"request_id": request_ids[0], "actual": [
                        "yes"] * ROWS})
                if answer.status_code != 503:
                    break
                time.sleep(0.5)
            assert answer.status_code == 200 and answer.json()["accepted"] == ROWS, answer.text
            quality = session.get(f"{server.base}/admin/models/binary/quality").json()
            assert quality["outcomes"] == ROWS and quality["live_eval_metric"] is not None, quality

            # Shifted rows: num moved by six standard deviations, a third of colours never seen.
            send_through_each_worker(server, shifted(mixed_frame(n=400, seed=8)))
            drift_url = f"{server.base}/admin/models/binary/drift"
            # The other worker's last rows arrive with its next flush (every 0.2 s here).
            assert eventually(lambda: session.get(drift_url).json()["rows"] == 2 * REQUESTS * ROWS, 5)
            report = session.get(drift_url).json()
            assert report["drifted_features"] == ["color", "num"], report["features"]
            features = report["features"]
            assert features["num"]["psi"] > 0.2 and features["num"]["out_of_range_share"] > 0.1
            assert features["color"]["unseen_share"] > 0.1
            for name in ("cnt", "flag", "when", "note"):
                assert not features[name]["drifted"], (name, features[name])

            expected = {("feature-drift", "binary/num"), ("feature-drift", "binary/color"),
                        ("unseen-categories", "binary/color"), ("out-of-range", "binary/num")}
            assert eventually(lambda: len(hook.posts) >= 4 and len(mailbox.messages) >= 4), (hook.posts, mailbox)
            assert {(p["alert"]["rule"], p["alert"]["subject"]) for p in hook.posts} == expected
            assert all(p["alert"]["state"] == "firing" for p in hook.posts)
            assert sorted(m["Subject"] for m in mailbox.messages) == sorted(
                f"[agserve] FIRING {rule} ({subject})" for rule, subject in expected)
            assert mailbox.tls_sessions == 4 and all(ok for _, ok in mailbox.logins)
            assert eventually(lambda: dead.connections >= 1)  # the dead channel is now stuck mid-delivery

            # Predictions while the dead channel hangs are as quick as before it.
            during, _ = send_through_each_worker(server, shifted(mixed_frame(n=400, seed=9)))
            assert statistics.median(during) < 3 * statistics.median(before) + 0.05, (before, during)
            assert max(during) < 2.0

            # Still drifting, evaluated again and again: no second message for any of the four conditions.
            time.sleep(2.5)
            assert len(hook.posts) == 4 and len(mailbox.messages) == 4
            alerts = session.get(f"{server.base}/admin/alerts").json()
            assert {(f["rule"], f["subject"]) for f in alerts["firing"]} == expected
            assert alerts["evaluator"]["runs"] >= 8 and alerts["evaluator"]["pid"] in pids
            assert {entry["pid"] for entry in alerts["log"]} == {alerts["evaluator"]["pid"]}  # one process

            text = session.get(f"{server.base}/metrics").text
            psi = {s.labels["feature"]: s.value for f in text_string_to_metric_families(text) if f.name == "agserve_drift"
                   for s in f.samples if s.labels["statistic"] == "psi"}
            assert psi["num"] > 0.2 and psi["cnt"] < 0.2
            checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                                     timeout=60)
            assert checked.returncode == 0, checked.stdout + checked.stderr
