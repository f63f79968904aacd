"""The dashboard in a real browser (Chromium through Playwright): launch the quick demo, watch it run,
see its curves, download a figure; queue a study from the Studies page and see its verdict appear."""
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, require_system
from lab.runs.store import Store

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if require_system():
            pytest.fail("playwright is not installed")
        pytest.skip("playwright is not installed")
    if not Path(CHROMIUM).exists():
        if require_system():
            pytest.fail("Chromium is not installed (apt-get install chromium)")
        pytest.skip("Chromium is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def server(tmp_path):
    results = tmp_path / "results"
    port = _free_port()
    env = {**os.environ, "LAB_RESULTS": str(results)}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.port", str(port),
                             "--server.headless", "true"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.3)
    yield f"http://127.0.0.1:{port}", results
    proc.terminate()
    proc.wait(20)
    # stop what the dashboard started: the detached worker and its runs
    store = Store(results)
    for w in store.live_workers():
        os.kill(w["pid"], signal.SIGTERM)
    for run in store.active_here():
        os.kill(run["pid"], signal.SIGTERM)


def test_quick_demo_from_launch_to_curves(browser, server):
    url, results = server
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page.goto(url)
    page.get_by_role("button", name="Quick demo (CPU, minutes)").click()
    page.get_by_text("4 run(s)").wait_for(timeout=30000)
    page.get_by_role("button", name="Queue runs").click()
    page.get_by_text("Queued 4 run(s)").wait_for(timeout=60000)

    page.goto(url + "/runs")
    running = page.locator('[data-testid="stMetric"]').filter(has_text="running")
    # the worker trains two runs at a time (its two slots): one or two shown running (waiting for "1" alone waited
    # until three of the four runs had ended)
    running.locator('[data-testid="stMetricValue"]').filter(has_text=re.compile(r"^[12]$")).wait_for(timeout=90000)
    store = Store(results)
    assert set(store.runs()["status"]) <= {"queued", "running", "done"}

    page.goto(url + "/curves")
    page.locator(".legendtext").filter(has_text="plain-20 (x0.5) [quick demo] train").first.wait_for(timeout=120000)
    with page.expect_download(timeout=120000) as download:
        page.get_by_role("button", name="SVG").first.click()
    svg = Path(download.value.path()).read_text()
    assert svg.startswith("<svg") and "plain-20 (x0.5) [quick demo] train" in svg and "error (%)" in svg


def test_studies_page_queues_a_study_and_shows_its_verdict(browser, server):
    url, results = server
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url + "/studies?study=depth&budget=smoke")
    # the first visit measures this machine's speed for the time estimates: seconds, more on a busy machine
    page.get_by_text("Does a deeper ResNet reach a lower test error").first.wait_for(timeout=120000)
    page.get_by_role("button", name="Queue 4 missing run(s)").click()
    page.get_by_text("Queued 4 run(s)").wait_for(timeout=60000)
    # four smoke runs through the background worker (a minute; several on a busy machine); the page refreshes
    # itself while they run
    verdict = re.compile(r"(resnet-14 ends with a (lower|higher) test error than resnet-8|"
                         r"No clear difference between resnet-14 and resnet-8): final test error")
    page.get_by_text(verdict).first.wait_for(timeout=480000)
    assert set(Store(results).runs()["status"]) == {"done"}
