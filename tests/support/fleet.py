"""The fleet's timings, and asking every worker of every replica in turn."""
from __future__ import annotations

import requests

RELOAD_INTERVAL = 0.5
ALERT_INTERVAL = 0.5


def every_worker(fleet, ask) -> dict[str, list]:
    """ask(replica, session) once through each worker of each replica (the replica's other workers paused)."""
    answers: dict[str, list] = {}
    for replica in fleet.all:
        answers[replica.name] = []
        for pid in replica.server.worker_pids():
            with replica.server.only_worker(pid), requests.Session() as session:
                session.headers.update({"X-API-Key": replica.key, "Connection": "close"})
                answers[replica.name].append(ask(replica, session))
    return answers
