"""Headless Chromium (Debian's package) loads /docs from a real gunicorn: Swagger UI renders every operation, the
page's requests never leave loopback, and a screenshot is kept under test-artifacts/."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from urllib.parse import urlparse

from tests.servers import ROOT, gunicorn

ARTIFACTS = ROOT / "test-artifacts"


def chromium(profile, *arguments) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium")
    assert binary, "chromium is missing: `make test` installs Debian's chromium package"
    return subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           f"--user-data-dir={profile}", "--no-first-run", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--disable-extensions",
                           # Nothing but loopback resolves, so nothing could leave it even by mistake.
                           "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                           "--virtual-time-budget=15000", "--window-size=1280,2400", *arguments],
                          capture_output=True, text=True, timeout=180)


def page_requests(net_log_path, origin: str) -> list[str]:
    """URLs the page asked for: its navigation, and every request the page initiated."""
    text = net_log_path.read_text().rstrip()
    log = json.loads(text if text.endswith("}") else text.rstrip(",") + "]}")  # a log cut at exit lacks its end
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = []
    for event in log["events"]:
        params = event.get("params", {})
        url = params.get("url", "")
        if event["type"] == start_job and (params.get("initiator") == origin or url.startswith(origin)):
            urls.append(url)
    return urls


def test_swagger_ui_renders_every_operation_offline(repository_path, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    with gunicorn(repository_path) as server:
        spec = server.session().get(f"{server.base}/openapi.json").json()
        net_log = tmp_path / "net.json"
        dom = chromium(tmp_path / "profile", f"--log-net-log={net_log}", "--dump-dom", f"{server.base}/docs")
        assert dom.returncode == 0, dom.stderr[-2000:]
        shot = chromium(tmp_path / "profile2", f"--screenshot={ARTIFACTS / 'docs.png'}", f"{server.base}/docs")
        assert shot.returncode == 0, shot.stderr[-2000:]

    rendered = set(re.findall(r'class="opblock-summary-path"[^>]*data-path="([^"]+)"', dom.stdout))
    assert rendered == set(spec["paths"]), set(spec["paths"]) ^ rendered
    assert "X-API-Key" in json.dumps(spec["components"]["securitySchemes"])  # what the Authorize button offers

    requests = page_requests(net_log, server.base)
    assert any(u.endswith("/docs/static/swagger-ui-bundle.js") for u in requests)
    assert any(u.endswith("/openapi.json") for u in requests)
    assert all(urlparse(u).hostname == "127.0.0.1" for u in requests), requests
    assert (ARTIFACTS / "docs.png").stat().st_size > 20_000  # a rendered page, not a blank one
