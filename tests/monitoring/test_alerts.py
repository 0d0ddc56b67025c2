"""Alert rules: parsing, de-duplication and cool-down, one evaluating process, and delivery with retries to a real
SMTP server (STARTTLS + login) and a real webhook receiver on loopback."""
from __future__ import annotations

import smtplib
import time

import pytest

from app.config import ConfigError
from app.db import sqlite_file
from app.monitoring.alerts import AlertConfig, EmailChannel, Evaluator, Rule, WebhookChannel, load_alert_config
from app.monitoring.leader import FileLeader
from app.monitoring.store import MonitorStore
from tests.support.receivers import self_signed_certificate, smtp_server, webhook_receiver
from tests.support.servers import eventually


class Readings:
    """What the rules see, set by the test."""

    def __init__(self):
        self.values: dict[str, float] = {}

    def __call__(self, rule):
        return [(subject, value, 1000) for subject, value in self.values.items()]


@pytest.fixture()
def certificate(tmp_path):
    return self_signed_certificate(tmp_path)


def test_email_is_sent_over_starttls_with_login(certificate, monkeypatch):
    cert, key = certificate
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "s3cret")
    with smtp_server(cert, key, "alerts", "s3cret") as mailbox:
        channel = EmailChannel("127.0.0.1", mailbox.port, "agserve@example.test", ("ops@example.test",),
                               username="alerts", password_env="TEST_SMTP_PASSWORD", ca_file=str(cert))
        channel.send({"id": 1, "title": "FIRING test", "text": "num drifted"})
        assert mailbox.tls_sessions == 1 and mailbox.logins == [("alerts", True)]
        [message] = mailbox.messages
        assert message["Subject"] == "[agserve] FIRING test" and message["To"] == "ops@example.test"
        assert "num drifted" in message.get_payload()

        monkeypatch.setenv("TEST_SMTP_PASSWORD", "wrong")
        channel.timeout = 3
        with pytest.raises(smtplib.SMTPException):
            channel.send({"id": 2, "title": "x", "text": "x"})
        assert mailbox.logins[-1] == ("alerts", False) and len(mailbox.messages) == 1


def test_cool_down_and_de_duplication(tmp_path):
    now = [1000.0]
    store = MonitorStore(sqlite_file(tmp_path / "monitor.sqlite3"))
    readings = Readings()
    with webhook_receiver() as hook:
        rule = Rule("psi", "drift_psi", above=0.2, cooldown_seconds=600)
        evaluator = Evaluator(store, AlertConfig([rule], {"webhook": WebhookChannel(hook.url)}), readings,
                              clock=lambda: now[0])
        readings.values = {"m/num": 0.1}
        assert evaluator.evaluate() == []
        readings.values = {"m/num": 0.9}
        assert [a["state"] for a in evaluator.evaluate()] == ["firing"]
        for _ in range(3):  # still firing: the same condition is not announced again
            now[0] += 60
            assert evaluator.evaluate() == []
        readings.values = {"m/num": 0.1}
        assert [a["state"] for a in evaluator.evaluate()] == ["resolved"]
        readings.values = {"m/num": 0.9}  # flapping back within the cool-down: no message
        now[0] += 60
        assert evaluator.evaluate() == []
        readings.values = {"m/num": 0.1}  # and so no resolution of it either
        assert evaluator.evaluate() == []
        readings.values = {"m/num": 0.9, "m/color": 0.5}
        now[0] += 600  # past the cool-down: num is news again; color was never announced
        assert sorted((a["subject"], a["state"]) for a in evaluator.evaluate()) == [
            ("m/color", "firing"), ("m/num", "firing")]
        assert eventually(lambda: len(hook.posts) == 4)
    assert [p["alert"]["state"] for p in hook.posts[:2]] == ["firing", "resolved"]
    assert all(p["text"] for p in hook.posts)  # what Slack shows
    assert [e["kind"] for e in store.alerts()["log"]].count("suppressed") == 1


def test_a_failing_channel_is_retried_and_does_not_hold_up_the_others(tmp_path):
    store = MonitorStore(sqlite_file(tmp_path / "monitor.sqlite3"))
    readings = Readings()
    readings.values = {"all requests": 0.5}
    with webhook_receiver(answers=[500, 503]) as flaky, webhook_receiver() as healthy:
        channels = {"flaky": WebhookChannel(flaky.url), "healthy": WebhookChannel(healthy.url)}
        evaluator = Evaluator(store, AlertConfig([Rule("errors", "error_rate", above=0.05)], channels), readings,
                              retries=3, backoff=0.3)
        started = time.monotonic()
        evaluator.evaluate()
        assert time.monotonic() - started < 0.5  # evaluation only queues the deliveries
        assert eventually(lambda: len(healthy.posts) == 1, 2)
        assert flaky.posts == []  # still retrying: its first two attempts were refused
        assert eventually(lambda: len(flaky.posts) == 1, 5)


def test_only_one_process_leads(tmp_path):
    import multiprocessing

    lock = tmp_path / "leader.lock"
    assert FileLeader(lock).try_lead()
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:  # another process cannot take the lock while this one holds it
        assert pool.apply(_try_lead, (str(lock),)) is False


def _try_lead(path):
    return FileLeader(path).try_lead()


@pytest.mark.parametrize("text, message", [
    ("[[rules]]\nname='a'\nmetric='nonsense'\nabove=1\n", "metric, one of"),
    ("[[rules]]\nname='a'\nmetric='error_rate'\n", "exactly one of above or below"),
    ("[[rules]]\nname='a'\nmetric='error_rate'\nabove='high'\n", "must be numbers"),
    ("[[rules]]\nname='a'\nmetric='error_rate'\nabove=1\nchannels=['pager']\n", "no channel named pager"),
    ("[channels.email]\nhost='h'\nport=25\nfrom='a@b'\nto='c@d'\npassword_env='NO_SUCH_VARIABLE_X'\n", "not set"),
    ("[channels.webhook]\nurl='ftp://x'\n", "http:// or https://"),
    ("rules = [", "not valid TOML"),
])
def test_bad_rule_files_are_refused_in_one_line(tmp_path, text, message):
    path = tmp_path / "alerts.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_alert_config(path)
    assert "\n" not in str(caught.value) and str(caught.value).startswith("AGSERVE_ALERT_RULES")


def test_lost_records_fire_an_alert_per_store_and_resolve_when_the_window_has_none(tmp_path):
    import logging

    from app.config import load_settings
    from app.metrics import LostRecords
    from app.monitoring.monitor import Monitor

    settings = load_settings({}, {"MONITOR_DB": str(tmp_path / "monitor.sqlite3"), "METRICS_DIR": ""})
    rule = Rule("records-lost", "records_lost", above=0, min_count=1, window_seconds=0.5, cooldown_seconds=0)
    with webhook_receiver() as hook:
        monitor = Monitor(settings, None, None, "tests", AlertConfig([rule], {"webhook": WebhookChannel(hook.url)}))
        monitor.evaluator.evaluate()  # counters of earlier tests in this process are the first window's
        time.sleep(0.6)
        monitor.evaluator.evaluate()
        assert monitor.store.firing_subjects("records-lost") == []
        LostRecords("test_store", logging.getLogger("test"))(3, "lost")
        [alert] = monitor.evaluator.evaluate()
        assert (alert["subject"], alert["state"], alert["value"]) == ("test_store", "firing", 3)
        time.sleep(0.6)
        monitor.evaluator.evaluate()
        assert [a["state"] for a in monitor.evaluator.evaluate()] == []  # resolved by the evaluation before
        assert monitor.store.firing_subjects("records-lost") == []
        assert eventually(lambda: [p["alert"]["state"] for p in hook.posts
                                   if p["alert"]["subject"] == "test_store"] == ["firing", "resolved"])


def test_the_example_rules_file_loads(monkeypatch):
    from app.config import PROJECT_ROOT

    monkeypatch.setenv("AGSERVE_SMTP_PASSWORD", "x")
    config = load_alert_config(PROJECT_ROOT / "config" / "alerts.example.toml")
    assert {rule.metric for rule in config.rules} == {
        "error_rate", "p95_latency_ms", "drift_psi", "drift_unseen_share", "drift_out_of_range_share",
        "drift_null_share_change", "live_metric_drop", "records_lost"}
    assert set(config.channels) == {"email", "webhook"}
