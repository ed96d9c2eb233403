"""Web pages of other origins against a server on the loopback address, in a real browser
(headless Chromium + chromedriver, as ``test_dashboard_browser.py``): an attacker page served
from another port of 127.0.0.1 tries to follow the dashboard's WebSocket and to read and POST
to the API, a DNS-rebound name (``--host-resolver-rules`` maps ``rebound.test`` to 127.0.0.1)
loads the dashboard, and a page frames it. The server runs in open mode, where no key is needed,
so only the Origin check, the Host allow-list and the frame headers stand in the way
(docs/security.md).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Deployment, embedded_server, free_port
from tests.e2e.helpers import wait_until
from tests.e2e.test_dashboard_browser import CHROMEDRIVER, CHROMIUM

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

REBOUND = "rebound.test"
# A job the worker fails at once (its circuit is not one): it still goes Queued -> Failed,
# each a job event on the live feed.
JOB = b'{"program_id": "sampler", "backend": "fake_manila", "params": {"pubs": [["x", null]]}}'

ATTACKER_PAGE = """<!doctype html>
<html><body><h1>an unrelated page</h1>
<iframe id="frame" src="{target}/dashboard"></iframe>
<script>
const target = "{target}";
window.report = {{ws: "connecting", events: [], read: "pending", token: "pending", job: "pending"}};
const ws = new WebSocket(target.replace("http:", "ws:") + "/dashboard/ws");
ws.onopen = () => {{ report.ws = "open"; ws.send("{{}}"); }};
ws.onmessage = (message) => report.events.push(message.data);
ws.onerror = () => {{ if (report.ws === "connecting") report.ws = "failed"; }};
ws.onclose = (event) => {{ report.close = event.code; }};
fetch(target + "/dashboard/api/jobs").then((r) => r.text()).then(
  (text) => {{ report.read = text; }}, (error) => {{ report.read = "blocked: " + error; }});
// Simple requests: the browser sends them without asking, the answer is opaque to the page.
fetch(target + "/identity/token", {{method: "POST", mode: "no-cors", body: new URLSearchParams({{apikey: "x"}})}})
  .then((r) => {{ report.token = r.type; }}, () => {{ report.token = "error"; }});
fetch(target + "/api/v1/jobs", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}},
  body: '{job}'}}).then((r) => {{ report.job = r.type; }}, () => {{ report.job = "error"; }});
</script></body></html>
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """An embedded server in open mode (the default a laptop runs)."""
    with embedded_server(tmp_path_factory.mktemp("cross-origin")) as deployment:
        yield deployment


@contextlib.contextmanager
def attacker_site(folder: Path, target: str) -> Iterator[str]:
    """``http.server`` on another port of 127.0.0.1 serving the attacker page; yields its URL."""
    (folder / "index.html").write_text(ATTACKER_PAGE.format(target=target, job=JOB.decode()))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/index.html"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        message = "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
        if __import__("os").environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1200,900",
        f"--host-resolver-rules=MAP {REBOUND} 127.0.0.1",
    ):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _console(driver: Any) -> str:
    return "\n".join(str(entry.get("message", "")) for entry in driver.get_log("browser"))


def _submit(server: Deployment) -> str:
    token = httpx.post(f"{server.base}/identity/token", data={"apikey": "k"}).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    response = httpx.post(f"{server.base}/api/v1/jobs", content=JOB, headers=headers)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def _jobs(server: Deployment) -> int:
    token = httpx.post(f"{server.base}/identity/token", data={"apikey": "k"}).json()["access_token"]
    listing = httpx.get(f"{server.base}/api/v1/jobs", headers={"Authorization": f"Bearer {token}"})
    return int(listing.json()["count"])


def test_the_dashboard_itself_works_under_its_csp(server: Deployment, browser: Any) -> None:
    """The control: on its own origin the page goes live and receives job events, with no CSP report."""
    browser.get(f"{server.base}/dashboard?view=jobs")
    wait_until(lambda: browser.find_element("id", "live").text == "live", 15, "the live feed")
    job = _submit(server)
    rows = "return [...document.querySelectorAll('#jobs-table tbody tr')].map(r => r.dataset.job)"
    wait_until(lambda: job in browser.execute_script(rows), 10, "the job's row")
    # Chart.js drew its canvases (scripts ran) and the stylesheet applied.
    assert browser.execute_script("return getComputedStyle(document.body).margin") is not None
    assert "Content Security Policy" not in _console(browser)


def test_a_page_of_another_origin_gets_nothing(server: Deployment, browser: Any, tmp_path: Path) -> None:
    before = _jobs(server)
    with attacker_site(tmp_path, server.base) as page:
        browser.get(page)
        report = lambda: browser.execute_script("return window.report")  # noqa: E731
        wait_until(
            lambda: report()["ws"] != "connecting" and "pending" not in (report()["read"], report()["token"]),
            15,
            "the attacker page's attempts",
        )
        job = _submit(server)  # job events the page would see, were it connected
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not report()["events"]:
            time.sleep(0.1)
        seen = report()
        console = _console(browser)
    assert seen["ws"] == "failed" and seen["close"] == 1006, seen  # the handshake was answered 403
    assert seen["events"] == [], "no job event may reach another origin"
    assert seen["read"].startswith("blocked"), seen["read"]  # no CORS: unreadable, and refused anyway
    # The simple POSTs were sent (opaque answers), and the server refused them: no job was made.
    assert _jobs(server) == before + 1  # only the test's own job
    log = server.processes["server"].output()
    origin = page.rsplit("/", 1)[0]
    assert f"refused a dashboard WebSocket from origin '{origin}'" in log
    assert f"refused a request from origin '{origin}'" in log
    # The frame was refused too (X-Frame-Options / frame-ancestors).
    assert "frame" in console.lower() and ("deny" in console.lower() or "frame-ancestors" in console), console
    assert job


def test_a_dns_rebound_name_gets_400(server: Deployment, browser: Any) -> None:
    """``rebound.test`` resolves to 127.0.0.1: for the browser the page is same-origin with the
    server, so only the Host check keeps its requests out."""
    port = server.base.rsplit(":", 1)[1]
    browser.get(f"http://{REBOUND}:{port}/dashboard")
    body = browser.find_element("tag name", "body").text
    assert "QRS_ALLOWED_HOSTS" in body and "bad_request" in body, body
    assert browser.execute_script("return document.getElementById('live')") is None
    result = browser.execute_async_script(
        "const done = arguments[0];fetch('/dashboard/api/jobs').then(r => done(r.status), e => done(String(e)));"
    )
    assert result == 400
