"""Headless Chromium (Debian's package) loads /docs from a real gunicorn: Swagger UI renders every operation, the
page's requests never leave loopback, and a screenshot is kept under test-artifacts/."""
from __future__ import annotations

import json
import re
import shutil
from urllib.parse import urlparse

import pytest

from tests.support.browser import ARTIFACTS, chromium
from tests.support.servers import gunicorn


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


@pytest.fixture(scope="module")
def server(repository_path):
    """One server for the tests that only read the page and predict: neither changes what the other sees."""
    with gunicorn(repository_path) as running:
        yield running


def test_swagger_ui_renders_every_operation_offline(server, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
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


TRY_PREDICTION = """(async () => {
  const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));
  const find = async selector => {
    for (let i = 0; i < 200; i++) { const node = document.querySelector(selector); if (node) return node; await sleep(50); }
    throw new Error('not rendered: ' + selector);
  };
  const op = await find('#operations-prediction-post_predict');
  window.ui.preauthorizeApiKey('ApiKey', KEY);
  (op.querySelector('.opblock-summary-control') || op.querySelector('.opblock-summary')).click();
  (await find('#operations-prediction-post_predict .try-out__btn')).click();
  const editor = await find('#operations-prediction-post_predict textarea.body-param__text');
  Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, 'value').set.call(editor, BODY);
  editor.dispatchEvent(new Event('input', {bubbles: true}));
  await sleep(300);
  (await find('#operations-prediction-post_predict .execute')).click();
  const status = await find('#operations-prediction-post_predict .live-responses-table .response .response-col_status');
  const body = await find('#operations-prediction-post_predict .live-responses-table .response .microlight');
  return JSON.stringify({status: status.textContent.trim(), body: body.textContent});
})()"""


def run_in_page(profile, url: str, script: str) -> tuple[object, bytes]:
    """Open url in headless Chromium, driven through the DevTools protocol; evaluate script (a promise of a JSON
    string) there; return its value and a screenshot."""
    import asyncio
    import base64

    import aiohttp

    async def drive() -> tuple[object, bytes]:
        process = await asyncio.create_subprocess_exec(
            shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={profile}", "--no-first-run", "--disable-background-networking",
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1", "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0", "--window-size=1280,1600", "about:blank", stderr=asyncio.subprocess.PIPE)
        try:
            while True:  # Chromium prints where its DevTools endpoint listens
                line = (await asyncio.wait_for(process.stderr.readline(), 60)).decode()
                if "DevTools listening on" in line:
                    devtools = urlparse(line.split("on ", 1)[1].strip())
                    break
            async with aiohttp.ClientSession() as http:
                targets = await (await http.get(f"http://{devtools.netloc}/json/list")).json()
                page = next(t for t in targets if t["type"] == "page")
                async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                    ids = iter(range(1, 10_000))

                    async def call(method, **params):
                        number = next(ids)
                        await ws.send_json({"id": number, "method": method, "params": params})
                        while True:
                            message = await asyncio.wait_for(ws.receive_json(), 60)
                            if message.get("id") == number:
                                assert "error" not in message, message
                                return message["result"]

                    await call("Page.enable")
                    await call("Page.navigate", url=url)
                    result = await call("Runtime.evaluate", expression=script, awaitPromise=True, returnByValue=True)
                    assert "exceptionDetails" not in result, result
                    shot = await call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
                    return json.loads(result["result"]["value"]), base64.b64decode(shot["data"])
        finally:
            process.kill()
            await process.wait()

    return asyncio.run(drive())


def test_swagger_ui_authorises_with_an_api_key_and_sends_a_prediction(server, tmp_path):
    """Driven through the DevTools protocol: Authorize with the key, Try it out, Execute on POST /predict."""
    row = {"num": 0.5, "cnt": 3, "color": "red", "flag": True, "when": "2024-03-01T10:00:00", "note": "new shiny"}
    ARTIFACTS.mkdir(exist_ok=True)
    script = TRY_PREDICTION.replace("KEY", json.dumps(server.key)).replace(
        "BODY", json.dumps(json.dumps({"data": [row]})))
    answer, screenshot = run_in_page(tmp_path / "profile", f"{server.base}/docs", script)
    expected = server.session().post(f"{server.base}/predict", json={"data": [row]}).json()
    assert answer["status"] == "200", answer
    shown = json.loads(answer["body"])
    assert shown["predictions"] == expected["predictions"] and shown["probabilities"] == expected["probabilities"]
    (ARTIFACTS / "docs-prediction.png").write_bytes(screenshot)


AUTHORISE_THEN_SCHEMAS = """(async () => {
  const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));
  const find = async selector => {
    for (let i = 0; i < 200; i++) { const node = document.querySelector(selector); if (node) return node; await sleep(50); }
    throw new Error('not rendered: ' + selector);
  };
  const rows = () => Object.keys(window.ui.specSelectors.specJson().toJS().components.schemas)
                           .filter(name => name.startsWith('Row'));
  await find('#operations-prediction-post_predict');
  const before = rows();
  (await find('.auth-wrapper .authorize')).click();  // the Authorize dialog, as a user would
  const input = await find('.modal-ux .auth-container input');
  Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set.call(input, KEY);
  input.dispatchEvent(new Event('input', {bubbles: true}));
  (await find('.modal-ux .auth-container .auth-btn-wrapper .authorize')).click();
  for (let i = 0; i < 200 && rows().length === 0; i++) await sleep(50);
  return JSON.stringify({before: before, after: rows()});
})()"""


def test_in_production_swagger_ui_shows_the_models_after_authorize(repository_path, tmp_path):
    """The anonymous document has no model schemas; Authorize loads the document again with the credential."""
    import secrets

    from app.auth.keys import KeyStore
    from app.db import sqlite_file

    pepper = secrets.token_urlsafe(32)
    key, _ = KeyStore(sqlite_file(tmp_path / "auth.sqlite3"), pepper).create("docs", ["model_info"])
    with gunicorn(repository_path, workers=1, auth_db=tmp_path / "auth.sqlite3", AGSERVE_ENV="production",
                  AGSERVE_KEY_PEPPER=pepper, AGSERVE_PREDICTION_LOG_DIR="", AGSERVE_MODELS="binary") as server:
        shown, _ = run_in_page(tmp_path / "profile", f"{server.base}/docs",
                               AUTHORISE_THEN_SCHEMAS.replace("KEY", json.dumps(key)))
    assert shown == {"before": [], "after": ["Rowbinary"]}
