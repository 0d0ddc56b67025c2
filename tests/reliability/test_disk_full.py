"""A full disk under the prediction log and the monitoring store, against a real gunicorn: `continue` answers every
prediction and counts what was lost; `refuse` answers 503 in the error shape and logs every prediction it answered;
neither answers 500. The disk is a tiny tmpfs mounted by the test (the suite runs as root)."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess

import pytest

from tests.support.v2 import v2_body
from tests.support.data import FEATURES, to_records
from tests.support.servers import eventually, gunicorn
from tests.support.metrics import samples, scrape
from tests.support.predictionlog import read_log


@contextlib.contextmanager
def tiny_disk(path, size="1m"):
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(disk) -> None:
    """Take every free byte of the disk (the last write fails with ENOSPC)."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        with contextlib.suppress(OSError):
            for _ in range(10_000):  # bounded: far beyond the disk's size in 4 KiB steps
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    assert os.statvfs(disk).f_bavail == 0


def predict(server, rows, count):
    return [server.session().post(f"{server.base}/predict", json={"data": rows}, timeout=30) for _ in range(count)]


@pytest.mark.server
def test_continue_answers_every_prediction_and_counts_the_lost_records(repository_path, dataset, tmp_path):
    rows = to_records(dataset[1][FEATURES].head(2))
    with tiny_disk(tmp_path / "disk") as disk, \
            gunicorn(repository_path, workers=1, log_path=tmp_path / "server.log", AGSERVE_MODELS="binary",
                     AGSERVE_PREDICTION_LOG_DIR=str(disk / "predictions"),
                     AGSERVE_MONITOR_DB=str(disk / "monitor.sqlite3"), AGSERVE_MONITOR_FLUSH_SECONDS="0.2") as server:
        before = predict(server, rows, 3)
        assert eventually(lambda: (disk / "monitor.sqlite3").exists(), 10)
        fill(disk)
        during = predict(server, rows, 40)
        assert [r.status_code for r in before + during] == [200] * 43  # every prediction answered
        logged = read_log(disk / "predictions")  # whole lines only: a failed write was taken back
        assert {line["request_id"] for line in logged} >= {r.json()["request_id"] for r in before}

        text = scrape(server)
        assert samples(text, "agserve_records_lost_total", store="prediction_log") == 43 - len(logged) >= 30  # the last page took a few
        assert eventually(lambda: samples(scrape(server), "agserve_records_lost_total", store="monitoring") >= 1, 10)

        (disk / "filler").unlink()  # space again: the log resumes by itself
        after = predict(server, rows, 2)
        assert [r.status_code for r in after] == [200, 200]
        assert {r.json()["request_id"] for r in after} <= {line["request_id"] for line in read_log(disk / "predictions")}
        assert samples(scrape(server), "agserve_records_lost_total", store="prediction_log") == 43 - len(logged)

    lines = [json.loads(line) for line in (tmp_path / "server.log").read_text().splitlines() if line.startswith("{")]
    reports = [line for line in lines if line["message"].startswith("prediction log write failed")]
    assert len(reports) == 1 and reports[0]["error"] == "No space left on device"  # once a minute, not per request
    assert not [line for line in lines if line.get("status", 0) >= 500 or "traceback" in line]


@pytest.mark.server
def test_refuse_answers_503_and_every_answered_prediction_is_logged(repository_path, dataset, tmp_path):
    rows = to_records(dataset[1][FEATURES].head(2))
    with tiny_disk(tmp_path / "disk") as disk, \
            gunicorn(repository_path, workers=1, log_path=tmp_path / "server.log", AGSERVE_MODELS="binary",
                     AGSERVE_ON_RECORD_FAILURE="refuse", AGSERVE_PREDICTION_LOG_DIR=str(disk / "predictions")) as server:
        before = predict(server, rows, 3)
        fill(disk)
        during = predict(server, rows, 20)
        v2 = server.session().post(f"{server.base}/v2/models/binary/infer", timeout=30,
                                   json=v2_body(dataset[1][FEATURES].head(2)))
        assert [r.status_code for r in before] == [200] * 3
        codes = [r.status_code for r in during]  # the file's last page may still take a few lines
        refused = [r for r in during if r.status_code == 503]
        assert codes == [200] * (20 - len(refused)) + [503] * len(refused) and len(refused) >= 10
        assert v2.status_code == 503
        for answer in refused + [v2]:
            body = answer.json()
            assert set(body) == {"error", "details", "request_id"} and body["details"] == {"store": "prediction_log"}
            assert "retry later" in body["error"] and body["request_id"] == answer.headers["X-Request-ID"]
        lost = samples(scrape(server), "agserve_records_lost_total", store="prediction_log")
        assert lost == len(refused) + 1

        (disk / "filler").unlink()
        after = predict(server, rows, 2)
        assert [r.status_code for r in after] == [200, 200]
        answered = {r.json()["request_id"] for r in before + during + after if r.status_code == 200}
        assert {line["request_id"] for line in read_log(disk / "predictions")} == answered
    lines = [json.loads(line) for line in (tmp_path / "server.log").read_text().splitlines() if line.startswith("{")]
    assert not [line for line in lines if line.get("status", 0) >= 500 or "traceback" in line]


def test_refuse_stops_answering_while_the_monitoring_store_cannot_be_written(repository_path, dataset, tmp_path):
    from tests.support.apps import build_app, client_with_key

    rows = to_records(dataset[1][FEATURES].head(2))
    with tiny_disk(tmp_path / "disk") as disk:
        app = build_app(tmp_path / "auth.db", MODEL_REPOSITORY=str(repository_path), MODELS="binary",
                        ON_RECORD_FAILURE="refuse", MONITOR_DB=str(disk / "monitor.sqlite3"))
        client = client_with_key(app)
        collector = app.extensions["agserve.monitor"].collector
        assert client.post("/predict", json={"data": rows}).status_code == 200
        collector.flush()
        fill(disk)
        assert client.post("/predict", json={"data": rows}).status_code == 200  # not known yet: the write is later
        collector.flush()  # fails: the disk is full
        refused = client.post("/predict", json={"data": rows})
        assert refused.status_code == 503 and refused.get_json()["details"] == {"store": "monitoring"}
        (disk / "filler").unlink()
        collector.flush()  # the refusals' own traffic notes go through: the store works again
        assert client.post("/predict", json={"data": rows}).status_code == 200
