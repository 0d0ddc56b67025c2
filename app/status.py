"""What /admin/status reports: processes (psutil), disk, uptime, requests served, models. No Flask here."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping

import psutil

from app import metrics
from app.inference.registry import ModelRegistry


def collect(settings: Mapping[str, Any], registry: ModelRegistry, server_software: str) -> dict[str, Any]:
    me = psutil.Process()
    under_gunicorn = server_software.startswith("gunicorn")
    master = me.parent() if under_gunicorn else me
    workers = master.children() if under_gunicorn else [me]
    return {
        "server": server_software or "in-process",
        "uptime_seconds": round(time.time() - master.create_time(), 1),
        "requests_served": metrics.requests_served(settings["METRICS_DIR"]),
        "master": _process(master),
        "workers": [_process(worker) for worker in workers],
        "answered_by": os.getpid(),
        "system": {"cpu_percent": psutil.cpu_percent(interval=None), "cores": psutil.cpu_count(),
                   "memory": _memory()},
        "disk": {name: _disk(path) for name, path in (("models", settings["MODEL_REPOSITORY"]),
                                                      ("prediction_log", settings["PREDICTION_LOG_DIR"])) if path},
        "models": registry.status(),
    }


def _process(process: psutil.Process) -> dict[str, Any]:
    with process.oneshot():
        return {"pid": process.pid, "cpu_percent": process.cpu_percent(interval=0.05),
                "rss_mb": round(process.memory_info().rss / 2 ** 20, 1), "threads": process.num_threads(),
                "started": round(process.create_time(), 1)}


def _memory() -> dict[str, Any]:
    memory = psutil.virtual_memory()
    return {"total_mb": round(memory.total / 2 ** 20), "available_mb": round(memory.available / 2 ** 20),
            "percent": memory.percent}


def _disk(path: str) -> dict[str, Any]:
    target = Path(path)
    while not target.exists() and target != target.parent:
        target = target.parent
    usage = psutil.disk_usage(str(target))
    return {"path": path, "free_mb": round(usage.free / 2 ** 20), "percent": usage.percent}
