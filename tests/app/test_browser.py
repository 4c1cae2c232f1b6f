"""A real browser (Debian's chromium via Playwright) drives `streamlit run app/main.py` on localhost."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
REQUIRED = os.environ.get("QUANTSCOPE_REQUIRE_BROWSER") == "1"

pytestmark = pytest.mark.browser


def _skip_or_fail(reason: str) -> None:
    if REQUIRED:
        pytest.fail(reason)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _require_browser() -> None:
    if not Path(CHROMIUM).exists():
        _skip_or_fail(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _skip_or_fail("playwright is not installed (pip install .[dev])")


def start_server(runs: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """The server logs to runs/../server-<port>.log: a pipe nobody reads would block it once full."""
    port = _free_port()
    env = {**os.environ, "QUANTSCOPE_RUNS_ROOT": str(runs)}
    log = runs.parent / f"server-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port), "--server.headless", "true",
             "--server.address", "127.0.0.1", *extra], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    proc.log = log
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    pytest.fail("streamlit did not start within 60 s: " + log.read_text(errors="replace")[-2000:])


def launch(p):
    return p.chromium.launch(executable_path=CHROMIUM, args=[
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"])


def open_app(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1300})
    page.goto(url)
    page.get_by_test_id("stSidebarNavItems").wait_for(timeout=60_000)
    settle(page)
    return page


def run_comparison(page) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    nav(page, "Compare")
    page.get_by_role("button", name="Run comparison").click()
    try:
        page.get_by_text("Error is introduced at node", exact=False).first.wait_for(timeout=180_000)
    except PlaywrightTimeout:
        pytest.fail("no comparison result after 180 s; the page shows: " + page.inner_text("body")[-1500:])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _require_browser()
    runs = tmp_path_factory.mktemp("runs")
    proc, url = start_server(runs)
    yield url, runs
    proc.terminate()
    proc.wait(timeout=20)


def settle(page) -> None:
    """Waits until Streamlit has finished the current script run (a click during a rerun can be lost)."""
    page.wait_for_timeout(500)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=120_000)
    page.wait_for_timeout(500)


def nav(page, name: str) -> None:
    page.get_by_test_id("stSidebarNavItems").get_by_role("link", name=name).click()
    settle(page)


def test_compare_tick_rebuild_in_a_real_browser(server, tmp_path):
    from playwright.sync_api import sync_playwright

    url, runs = server
    with sync_playwright() as p:
        browser = launch(p)
        page = open_app(browser, url)
        run_comparison(page)

        nav(page, "Layers")
        page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
        page.wait_for_function("() => document.querySelector('.js-plotly-plot').data !== undefined", timeout=30_000)
        # plotly.js decodes the base64 arrays that plotly.py sends: count what it actually drew
        points = page.evaluate("() => document.querySelector('.js-plotly-plot')._fullData[0]._length")
        layers_csv = next(runs.rglob("layers.csv"))
        assert points == len(pd.read_csv(layers_csv))

        settle(page)
        page.get_by_role("button", name="Tick the top-k culprits").click()
        page.get_by_text("1 node(s) ticked for FP16 fallback", exact=False).wait_for(timeout=60_000)
        page.wait_for_timeout(1500)  # let plotly redraw the fallback marker before the screenshot
        shot = tmp_path / "layers.png"
        page.screenshot(path=str(shot), full_page=True)
        if os.environ.get("QUANTSCOPE_UPDATE_SCREENSHOT") == "1":
            shutil.copy(shot, ROOT / "docs" / "layers.png")

        nav(page, "Rebuild")
        page.get_by_role("button", name="Rebuild with fallback").click()
        page.wait_for_function(
            "() => [...document.querySelectorAll('.js-plotly-plot')].some(g => (g.data || []).some(t => t.name === 'SNR after'))",
            timeout=180_000)
        browser.close()


def test_upload_flow_in_a_real_browser(server):
    """Upload a model and calibration data (not the bundled sample) and run the comparison on them."""
    from playwright.sync_api import sync_playwright

    url, runs = server
    samples = ROOT / "sample_models"
    with sync_playwright() as p:
        browser = launch(p)
        page = open_app(browser, url)
        page.get_by_text("Upload", exact=True).click()
        settle(page)
        inputs = page.locator("input[type=file]")
        inputs.nth(0).set_input_files(str(samples / "resnet_digits.onnx"))
        inputs.nth(1).set_input_files(str(samples / "digits_calib.npz"))
        settle(page)
        page.get_by_role("button", name="Use these files").click()
        page.get_by_text("Loaded resnet_digits.onnx with 128 calibration samples.").wait_for(timeout=60_000)
        settle(page)
        nav(page, "Compare")
        page.get_by_text("Model: resnet_digits.onnx", exact=False).wait_for(timeout=30_000)
        page.get_by_role("button", name="Run comparison").click()
        page.get_by_text("Error is introduced at node", exact=False).first.wait_for(timeout=180_000)
        browser.close()
    uploads = [p for p in runs.rglob("uploads/*/*") if p.is_file()]
    assert sorted(p.name for p in uploads) == ["calib.npz", "model.onnx"]  # generated names, never the user's


def test_server_killed_mid_run_then_restarted_keeps_the_workspace(tmp_path):
    """SIGKILL the server while a comparison runs; after a restart the same link shows the finished run as the current
    result and the killed one as incomplete."""
    from playwright.sync_api import sync_playwright

    from engine.run_index import RunIndex, RunStatus

    _require_browser()
    runs = tmp_path / "runs"
    proc, url = start_server(runs)
    try:
        with sync_playwright() as p:
            browser = launch(p)
            page = open_app(browser, url)
            run_comparison(page)
            settle(page)
            token = page.evaluate("() => new URLSearchParams(window.location.search).get('ws')")
            assert token and RunIndex(runs).open_workspace(token) is not None  # the address bar carries the workspace token
            (first,) = RunIndex(runs).runs()
            snapshot = {f.name: f.read_bytes() for f in first.run_dir.iterdir() if f.is_file()}

            page.get_by_label("Batch size").fill("1")  # a slow second run, killed half-way
            page.get_by_label("Batch size").press("Enter")
            settle(page)
            page.get_by_role("button", name="Run comparison").click()
            deadline = time.time() + 120
            while not any(r.status is RunStatus.RUNNING for r in RunIndex(runs).runs()):
                assert time.time() < deadline, "the second comparison never started"
                time.sleep(0.05)
            time.sleep(1.0)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)

            proc, url = start_server(runs)
            page.goto(f"{url}/?ws={token}")
            page.get_by_test_id("stSidebarNavItems").wait_for(timeout=60_000)
            settle(page)
            nav(page, "Compare")
            page.get_by_text("Error is introduced at node", exact=False).first.wait_for(timeout=60_000)  # restored
            nav(page, "History")
            page.get_by_text("1 run(s) did not finish", exact=False).wait_for(timeout=60_000)
            browser.close()
        assert [r.status for r in RunIndex(runs).runs()] == [RunStatus.DONE, RunStatus.INCOMPLETE]
        assert {f.name: f.read_bytes() for f in first.run_dir.iterdir() if f.is_file()} == snapshot  # untouched
    finally:
        proc.kill()
        proc.wait(timeout=20)


def test_a_page_address_as_the_first_request_still_goes_through_the_password_gate(tmp_path):
    """Streamlit runs scripts of a folder named pages/ next to the main script directly until st.navigation has run
    once in the process: a first visit to /compare then skipped main.py (the gate, the workspace). No such folder here."""
    from playwright.sync_api import sync_playwright

    _require_browser()
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('password = "s3cret"\n')
    proc, url = start_server(tmp_path / "runs", "--secrets.files", str(secrets))
    try:
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page()
            page.goto(f"{url}/compare")  # the first request this server process gets
            page.get_by_label("Password", exact=True).wait_for(timeout=60_000)
            settle(page)
            assert page.get_by_text("Compare FP32 with INT8").count() == 0
            page.get_by_label("Password", exact=True).fill("s3cret")
            page.get_by_label("Password", exact=True).press("Enter")
            page.get_by_test_id("stSidebarNavItems").wait_for(timeout=60_000)  # in, through main.py's router
            settle(page)
            nav(page, "Compare")
            page.get_by_text("Compare FP32 with INT8").wait_for(timeout=60_000)
            browser.close()
    finally:
        proc.kill()
        proc.wait(timeout=20)
