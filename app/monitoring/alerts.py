"""Alert rules from a TOML file, evaluated by exactly one process, delivered by email (SMTP) and webhook.

Every worker of every replica runs an evaluator thread, but only the holder of the leader lock evaluates (leader.py:
a PostgreSQL advisory lock in a fleet, a file lock on one machine); if it dies the lock is released and another
takes over. Firing state lives in the database, so a new leader neither repeats nor forgets what was sent. Each
(rule, subject) is one condition: one message when it starts firing (none again while it keeps firing, nor within
the rule's cool-down after the last message), and one when it resolves. Channels deliver from their own threads with
retries; a dead channel delays only its own messages.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import smtplib
import ssl
import threading
import time
import tomllib
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Callable, Iterable

from app.config import ConfigError

log = logging.getLogger("agserve.alerts")
METRICS = {
    # name: what it measures (and the window it is taken over)
    "error_rate": "share of 5xx answers over the rule's window",
    "p95_latency_ms": "95th percentile of request latency over the rule's window (upper edge of its bin)",
    "drift_psi": "population stability index of a feature over the drift window",
    "drift_unseen_share": "share of a feature's values that are unseen categories, over the drift window",
    "drift_out_of_range_share": "share of a feature's numbers outside the reference range, over the drift window",
    "drift_null_share_change": "change of a feature's missing share against the reference, over the drift window",
    "live_metric": "the eval metric on feedback over the quality window (AutoGluon's sign: higher is better)",
    "live_metric_drop": "validation score minus live score of the eval metric (positive: worse live)",
    "records_lost": "requests whose record the prediction log or the monitoring store could not keep, over the rule's "
                    "window (all workers; subject: the store)",
}


@dataclass(frozen=True)
class Rule:
    name: str
    metric: str
    above: float | None = None
    below: float | None = None
    window_seconds: float = 300
    min_count: int = 20  # requests (error rate, latency) or outcomes (live metric) needed before judging
    model: str = ""  # empty: every served model (request metrics: all requests together)
    cooldown_seconds: float = 900
    channels: tuple[str, ...] = ()  # empty: every configured channel

    def breached(self, value: float) -> bool:
        return (self.above is not None and value > self.above) or (self.below is not None and value < self.below)

    def describe(self) -> str:
        return f"> {self.above:g}" if self.above is not None else f"< {self.below:g}"


@dataclass
class AlertConfig:
    rules: list[Rule]
    channels: dict[str, "Channel"] = field(default_factory=dict)


def load_alert_config(path: str | os.PathLike) -> AlertConfig:
    """Parse and check the rules file; ConfigError (one line) for anything wrong."""
    try:
        document = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"AGSERVE_ALERT_RULES: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"AGSERVE_ALERT_RULES: {path} is not valid TOML: {exc}") from None
    unknown = set(document) - {"rules", "channels"}
    if unknown:
        raise ConfigError(f"AGSERVE_ALERT_RULES: unknown top-level keys {sorted(unknown)}")
    channels: dict[str, Channel] = {}
    for name, spec in (document.get("channels") or {}).items():
        channels[name] = _channel(name, spec)
    rules = [_rule(index, spec, channels) for index, spec in enumerate(document.get("rules") or [])]
    names = [rule.name for rule in rules]
    if len(set(names)) != len(names):
        raise ConfigError("AGSERVE_ALERT_RULES: rule names must be unique")
    return AlertConfig(rules, channels)


def _rule(index: int, spec: dict[str, Any], channels: dict[str, "Channel"]) -> Rule:
    where = f"AGSERVE_ALERT_RULES: rules[{index}]"
    allowed = set(Rule.__dataclass_fields__)
    if not isinstance(spec, dict) or set(spec) - allowed:
        raise ConfigError(f"{where}: unknown keys {sorted(set(spec) - allowed) if isinstance(spec, dict) else spec}")
    if not spec.get("name") or spec.get("metric") not in METRICS:
        raise ConfigError(f"{where}: needs a name and a metric, one of {', '.join(METRICS)}")
    if ("above" in spec) == ("below" in spec):
        raise ConfigError(f"{where} ({spec['name']}): give exactly one of above or below")
    try:
        rule = Rule(**{**spec, "channels": tuple(spec.get("channels", ()))})
        for number in (rule.above, rule.below, rule.window_seconds, rule.cooldown_seconds):
            if number is not None and not isinstance(number, (int, float)):
                raise TypeError
    except TypeError:
        raise ConfigError(f"{where} ({spec['name']}): thresholds, windows and cool-downs must be numbers") from None
    missing = [name for name in rule.channels if name not in channels]
    if missing:
        raise ConfigError(f"{where} ({rule.name}): no channel named {', '.join(missing)}")
    return rule


# --- channels ------------------------------------------------------------------------------------------------
class Channel:
    name = "channel"

    def send(self, alert: dict[str, Any]) -> None:
        raise NotImplementedError


@dataclass
class EmailChannel(Channel):
    host: str
    port: int
    sender: str
    to: tuple[str, ...]
    username: str = ""
    password_env: str = ""  # the password is read from this environment variable, never from the file
    starttls: bool = True
    ca_file: str = ""  # a CA to trust besides the system's (a private SMTP relay)
    timeout: float = 10
    name: str = "email"

    def send(self, alert: dict[str, Any]) -> None:
        message = EmailMessage()
        message["Subject"] = f"[agserve] {alert['title']}"
        message["From"], message["To"] = self.sender, ", ".join(self.to)
        message.set_content(alert["text"] + "\n\n" + json.dumps(alert, indent=2, default=str))
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls:
                context = ssl.create_default_context(cafile=self.ca_file or None)
                smtp.starttls(context=context)
            if self.username:
                smtp.login(self.username, os.environ.get(self.password_env, "") if self.password_env else "")
            smtp.send_message(message)


@dataclass
class WebhookChannel(Channel):
    url: str
    timeout: float = 5
    name: str = "webhook"

    def send(self, alert: dict[str, Any]) -> None:
        # Slack-compatible: "text" is what Slack shows; the rest is there for other receivers.
        body = json.dumps({"text": alert["text"], "alert": alert}, default=str).encode()
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - URL from the config
            if response.status >= 300:
                raise OSError(f"webhook answered {response.status}")


def _channel(name: str, spec: dict[str, Any]) -> Channel:
    where = f"AGSERVE_ALERT_RULES: channels.{name}"
    kind = spec.get("type", name)
    spec = {k: v for k, v in spec.items() if k != "type"}
    try:
        if kind == "email":
            spec["sender"] = spec.pop("from")
            spec["to"] = tuple([spec["to"]] if isinstance(spec["to"], str) else spec["to"])
            channel: Channel = EmailChannel(**spec, name=name)
            if channel.password_env and channel.password_env not in os.environ:
                raise ConfigError(f"{where}: the password variable {channel.password_env} is not set")
            return channel
        if kind == "webhook":
            if not str(spec.get("url", "")).startswith(("http://", "https://")):
                raise ConfigError(f"{where}: url must be http:// or https://")
            return WebhookChannel(**spec, name=name)
    except (TypeError, KeyError) as exc:
        raise ConfigError(f"{where}: bad or missing settings ({exc})") from None
    raise ConfigError(f"{where}: type must be email or webhook")


class Delivery:
    """One thread and queue per channel: sends with retries and backoff, logs every failure, never blocks."""

    def __init__(self, channel: Channel, retries: int = 5, backoff: float = 2.0, on_result: Callable | None = None):
        self.channel, self.retries, self.backoff = channel, retries, backoff
        self.on_result = on_result
        self._queue: queue.Queue = queue.Queue(maxsize=1000)
        self._thread = threading.Thread(target=self._run, name=f"agserve-alerts-{channel.name}", daemon=True)
        self._thread.start()

    def submit(self, alert: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            log.error("alert dropped: the %s channel is backed up", self.channel.name, extra={"alert": alert["id"]})

    def _run(self) -> None:
        while True:
            alert = self._queue.get()
            for attempt in range(1, self.retries + 1):
                try:
                    self.channel.send(alert)
                except Exception as exc:  # any failure of a channel is logged and retried, never raised
                    log.warning("alert delivery failed", extra={
                        "alert": alert["id"], "channel": self.channel.name, "attempt": attempt,
                        "error": f"{type(exc).__name__}: {exc}"})
                    if attempt < self.retries:
                        time.sleep(self.backoff * 2 ** (attempt - 1))
                    continue
                log.info("alert delivered", extra={"alert": alert["id"], "channel": self.channel.name,
                                                   "attempt": attempt})
                if self.on_result:
                    self.on_result(alert, self.channel.name, True)
                break
            else:
                log.error("alert not delivered: gave up", extra={"alert": alert["id"], "channel": self.channel.name})
                if self.on_result:
                    self.on_result(alert, self.channel.name, False)


# --- evaluation ----------------------------------------------------------------------------------------------
Observation = tuple[str, float, int]  # subject, value, how many requests/rows/outcomes it rests on


class Evaluator:
    """Compares every rule with what `observe(rule)` reports and sends what changed."""

    def __init__(self, store, config: AlertConfig, observe: Callable[[Rule], Iterable[Observation]],
                 clock: Callable[[], float] = time.time, retries: int = 5, backoff: float = 2.0):
        self.store, self.config, self.observe, self.clock = store, config, observe, clock
        self.deliveries = {name: Delivery(channel, retries, backoff) for name, channel in config.channels.items()}

    def evaluate(self) -> list[dict[str, Any]]:
        """One pass over the rules; return the alerts sent."""
        sent = []
        for rule in self.config.rules:
            try:
                observations = list(self.observe(rule))
            except Exception:
                log.exception("alert rule could not be evaluated", extra={"rule": rule.name})
                continue
            breached = {subject: value for subject, value, count in observations
                        if count >= rule.min_count and rule.breached(value)}
            for subject, value in breached.items():
                sent += self._firing(rule, subject, value)
            for subject in self.store.firing_subjects(rule.name):
                if subject not in breached:
                    sent += self._resolved(rule, subject)
        self.store.mark_evaluation()
        return sent

    def _firing(self, rule: Rule, subject: str, value: float) -> list[dict[str, Any]]:
        now = self.clock()
        with self.store.alert_condition(rule.name, subject) as condition:
            if condition.firing:  # de-duplication: the same condition, already announced
                condition.update(True, condition.since, condition.last_sent, value)
                return []
            if condition.last_sent is not None and now - condition.last_sent < rule.cooldown_seconds:
                condition.update(True, now, condition.last_sent, value)
                condition.log("suppressed", value, "firing again within the cool-down")
                return []
            condition.update(True, now, now, value)
            text = f"{rule.name}: {rule.metric} of {subject} is {value:.4g} ({rule.describe()})"
            alert = self._alert(condition.log("firing", value, text), rule, subject, "firing", value, text)
        return [self._deliver(rule, alert)]  # once the state is committed: a rolled-back announcement is not sent

    def _resolved(self, rule: Rule, subject: str) -> list[dict[str, Any]]:
        with self.store.alert_condition(rule.name, subject) as condition:
            if not condition.firing:  # resolved already, by an evaluator that overlapped this one
                return []
            condition.update(False, None, condition.last_sent, None)
            if condition.last_sent is None or (condition.since is not None and condition.last_sent < condition.since):
                return []  # its firing was suppressed by the cool-down, so its end is not news either
            text = f"{rule.name}: {rule.metric} of {subject} is back within {rule.describe()}"
            alert = self._alert(condition.log("resolved", None, text), rule, subject, "resolved", None, text)
        return [self._deliver(rule, alert)]

    def _alert(self, alert_id: int, rule: Rule, subject: str, kind: str, value: float | None,
               text: str) -> dict[str, Any]:
        return {"id": alert_id, "rule": rule.name, "metric": rule.metric, "subject": subject, "state": kind,
                "value": value, "threshold": rule.describe(), "title": f"{kind.upper()} {rule.name} ({subject})",
                "text": text, "at": self.clock(), "host": os.uname().nodename, "replica": self.store.replica}

    def _deliver(self, rule: Rule, alert: dict[str, Any]) -> dict[str, Any]:
        log.warning("alert %s", alert["state"], extra={"alert": alert["id"], "rule": rule.name,
                                                       "subject": alert["subject"], "value": alert["value"]})
        for name in rule.channels or tuple(self.deliveries):
            self.deliveries[name].submit(alert)
        return alert


def run_evaluator(evaluator: Evaluator | None, leader, interval: float,
                  maintenance: Callable[[], None]) -> threading.Thread:
    """Every interval: if this process leads, prune old data and evaluate the rules (if there are any)."""
    def loop() -> None:
        while True:
            time.sleep(interval)
            try:
                if leader.try_lead():
                    maintenance()
                    if evaluator is not None:
                        evaluator.evaluate()
            except Exception:  # keep evaluating whatever happens
                log.exception("alert evaluation failed")

    thread = threading.Thread(target=loop, name="agserve-alerts", daemon=True)
    thread.start()
    return thread
