"""The dashboard in a real browser: headless Chromium (Debian's ``chromium`` + ``chromedriver``,
installed by ``.ci/run``) driven by Selenium against a real server, jobs submitted by the
unmodified client.

With ``QRS_DASHBOARD_SCREENSHOTS=docs`` the main views are saved as PNGs in that folder
(docs/dashboard.md shows them).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Deployment, embedded_server
from tests.e2e.helpers import bell, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

CRN_A = "crn:v1:bluemix:public:quantum-computing:us-east:a/acct:alice-instance::"
CRN_B = "crn:v1:bluemix:public:quantum-computing:us-east:a/acct:bob-instance::"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SHOTS = os.environ.get("QRS_DASHBOARD_SCREENSHOTS")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """An embedded server with access control: alice -> A, bob -> B, and operator key ``ops``."""
    folder = tmp_path_factory.mktemp("dashboard")
    with embedded_server(
        folder, QRS_API_KEYS=f"alice={CRN_A};bob={CRN_B}", QRS_ADMIN_KEYS="ops", QRS_INSTANCE=CRN_A
    ) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        message = "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000",
    ):  # fmt: skip
        options.add_argument(flag)
    # The Service's explicit path: Selenium Manager never looks for (or downloads) a driver.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _service(server: Deployment, monkeypatch: pytest.MonkeyPatch, key: str):  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime import QiskitRuntimeService

    for name, value in server.client_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("QISKIT_IBM_TOKEN", key)
    for name in ("QISKIT_IBM_INSTANCE", "QISKIT_FUNCTIONS_EXPERIMENTAL", "QISKIT_IBM_CHANNEL"):
        monkeypatch.delenv(name, raising=False)
    return QiskitRuntimeService()


def _open(driver, server: Deployment, key: str, query: str) -> None:  # type: ignore[no-untyped-def]
    """Load the page with ``key`` in its session storage at ``?query``, and wait for the live feed."""
    driver.get(f"{server.base}/dashboard?view=none")
    driver.execute_script("sessionStorage.setItem('qrs-dashboard-key', arguments[0])", key)
    driver.get(f"{server.base}/dashboard?{query}")
    wait_until(lambda: driver.find_element("id", "live").text == "live", 15, "the live feed")


def _rows(driver) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Job id -> state cell of the jobs table."""
    return dict(
        driver.execute_script(
            "return [...document.querySelectorAll('#jobs-table tbody tr')]"
            ".map(r => [r.dataset.job, r.querySelector('td.status').textContent])"
        )
    )


def _shot(driver, name: str) -> None:  # type: ignore[no-untyped-def]
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(SHOTS) / f"dashboard-{name}.png"))


def _failing_job(server: Deployment) -> str:
    """A sampler job the worker fails (7 qubits on the 5-qubit fake_manila), sent as the client encodes it."""
    import numpy as np
    from qiskit import QuantumCircuit
    from qiskit_ibm_runtime import RuntimeEncoder

    wide = QuantumCircuit(7)
    wide.x(6)
    wide.measure_all()
    params = {"pubs": [(wide, np.array([]), None)], "options": {}, "version": 2, "support_qiskit": True}
    token = httpx.post(f"{server.base}/identity/token", data={"apikey": "alice"}).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}", "Service-CRN": CRN_A, "Content-Type": "application/json"}
    body = json.dumps({"program_id": "sampler", "backend": "fake_manila", "params": params}, cls=RuntimeEncoder)
    response = httpx.post(f"{server.base}/api/v1/jobs", content=body, headers=headers)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def test_submitted_job_appears_and_turns_completed_without_reload(server, browser, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime import SamplerV2

    _open(browser, server, "ops", "view=jobs")
    browser.execute_script("window.notReloaded = true")
    service = _service(server, monkeypatch, "alice")
    backend = service.backend("fake_manila")
    # The status with its extra estimated_wait_seconds still parses in the client.
    assert backend.status().operational and backend.status().pending_jobs >= 0
    job = SamplerV2(mode=backend).run([bell(backend)], shots=200)
    wait_until(lambda: job.job_id() in _rows(browser), 5, "the job's row")
    job.result()
    done = time.monotonic()
    wait_until(lambda: _rows(browser).get(job.job_id()) == "Completed", 5, "Completed on the page")
    # Pushed over the WebSocket: well within the page's 5 s refresh (with room for a loaded machine).
    assert time.monotonic() - done <= 3.0
    assert browser.execute_script("return window.notReloaded") is True
    _shot(browser, "jobs")


def test_filters_change_the_url_and_the_table_and_a_failure_shows_its_reason(server, browser, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.support.ui import Select

    failed = _failing_job(server)
    wait_until(lambda: httpx.get(
        f"{server.base}/dashboard/api/jobs/{failed}", headers={"Authorization": "apikey ops"}
    ).json()["status"] == "Failed", 60, "the job to fail")  # fmt: skip
    _open(browser, server, "ops", "view=jobs")
    Select(browser.find_element("name", "status")).select_by_visible_text("Failed")
    browser.find_element("css selector", "#filters button").click()
    wait_until(lambda: "status=Failed" in browser.current_url, 5, "the filter in the URL")
    wait_until(lambda: failed in _rows(browser), 5, "the failed job in the table")
    assert set(_rows(browser).values()) == {"Failed"}
    browser.find_element("link text", failed).click()
    wait_until(lambda: "more than the 5 qubits" in browser.find_element("id", "job-reason").text, 5, "the reason")
    assert f"id={failed}" in browser.current_url
    _shot(browser, "job")
    # The filtered view is shareable: loading its URL afresh shows the same table.
    browser.get(f"{server.base}/dashboard?view=jobs&status=Failed")
    wait_until(lambda: failed in _rows(browser), 5, "the bookmarked view")


def test_instance_key_sees_only_its_jobs(server, browser, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime import SamplerV2

    alice = _service(server, monkeypatch, "alice")
    backend = alice.backend("fake_manila")
    alice_job = SamplerV2(mode=backend).run([bell(backend)], shots=100)
    alice_job.result()
    bob = _service(server, monkeypatch, "bob")
    bob_job = SamplerV2(mode=bob.backend("fake_manila")).run([bell(backend)], shots=100)
    bob_job.result()
    _open(browser, server, "bob", "view=jobs")
    wait_until(lambda: bob_job.job_id() in _rows(browser), 5, "bob's job")
    # A job of alice's submitted while bob's page is open never reaches it (table or WebSocket).
    alice_live = SamplerV2(mode=backend).run([bell(backend)], shots=100)
    alice_live.result()
    time.sleep(0.5)
    assert set(_rows(browser)) == {bob_job.job_id()}
    assert alice_job.job_id() not in browser.page_source and alice_live.job_id() not in browser.page_source
    assert CRN_A not in browser.page_source
    _open(browser, server, "ops", "view=jobs")
    wait_until(lambda: {alice_job.job_id(), bob_job.job_id()} <= set(_rows(browser)), 5, "every job for ops")


def test_a_batch_link_lists_its_jobs(server, browser, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime import Batch, SamplerV2

    service = _service(server, monkeypatch, "alice")
    backend = service.backend("fake_manila")
    with Batch(backend=backend) as batch:
        jobs = [SamplerV2(mode=batch).run([bell(backend)], shots=50) for _ in range(2)]
        for job in jobs:
            job.result()
    _open(browser, server, "ops", "view=jobs")
    wait_until(lambda: jobs[0].job_id() in _rows(browser), 5, "the batch's job")
    browser.find_element("link text", batch.session_id).click()
    wait_until(lambda: "session_id=" in browser.current_url, 5, "the session filter in the URL")
    wait_until(lambda: set(_rows(browser)) == {j.job_id() for j in jobs}, 5, "only the batch's jobs")


def test_sessions_view_lists_a_batch_and_links_to_its_job(server, browser, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from qiskit_ibm_runtime import Batch, SamplerV2

    service = _service(server, monkeypatch, "alice")
    backend = service.backend("fake_manila")
    with Batch(backend=backend) as batch:
        job = SamplerV2(mode=batch).run([bell(backend)], shots=50)
        job.result()
    _open(browser, server, "ops", "view=sessions")
    row = f'#sessions-table tr[data-session="{batch.session_id}"]'
    wait_until(lambda: browser.find_elements("css selector", row), 5, "the batch's row")
    cells = [td.text for td in browser.find_elements("css selector", row + " td")]
    assert cells[1] == "batch" and cells[3] == "fake_manila" and cells[4] == CRN_A
    assert cells[2] in ("inactive", "closed") and cells[9] == "1"  # its one job, Completed
    _shot(browser, "sessions")
    browser.find_element("link text", batch.session_id).click()
    wait_until(lambda: "view=jobs" in browser.current_url and "session_id=" in browser.current_url, 5, "the jobs view")
    wait_until(lambda: set(_rows(browser)) == {job.job_id()}, 5, "only the batch's job")


def test_main_views_render(server, browser) -> None:  # type: ignore[no-untyped-def]
    for view in ("overview", "queue", "workers"):
        _open(browser, server, "ops", f"view={view}")
        section = browser.find_element("id", f"view-{view}")
        wait_until(lambda s=section: not s.get_attribute("hidden"), 5, view)
        wait_until(lambda: browser.find_element("id", "error").get_attribute("hidden") is not None, 5, "no error")
        if view == "overview":
            wait_until(lambda: "Completed" in browser.find_element("id", "cards").text, 5, "the cards")
            assert browser.execute_script("return Object.keys(Chart.instances).length") >= 4
        if view == "workers":
            wait_until(lambda: "CPU" in browser.find_element("id", "workers-table").text, 5, "the worker")
        time.sleep(0.3)  # charts drawn
        _shot(browser, view)
