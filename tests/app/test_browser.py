"""A real browser (Debian's chromium via Playwright) drives `streamlit run app/main.py` on localhost."""

from __future__ import annotations

import json
import os
import re
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


def start_server(runs: Path, *extra: str, env_extra: dict | None = None) -> tuple[subprocess.Popen, str]:
    """The server logs to runs/../server-<port>.log: a pipe nobody reads would block it once full."""
    port = _free_port()
    env = {**os.environ, "QUANTSCOPE_RUNS_ROOT": str(runs), **(env_extra or {})}
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
        page.get_by_text("hurts the final outputs most", exact=False).first.wait_for(timeout=180_000)
    except PlaywrightTimeout:
        pytest.fail("no comparison result after 180 s; the page shows: " + page.inner_text("body")[-1500:])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for this module's tests; a comparison at batch size 1 runs slowly on it (tests/app/slow_jobs), so a
    test can cancel it while it certainly runs."""
    _require_browser()
    runs = tmp_path_factory.mktemp("runs")
    slow = os.pathsep.join(filter(None, [str(Path(__file__).parent / "slow_jobs"), os.environ.get("PYTHONPATH")]))
    proc, url = start_server(runs, env_extra={"PYTHONPATH": slow, "QUANTSCOPE_TEST_SLOW_BATCH1": "1"})
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


CATALOG = json.loads((ROOT / "sample_models" / "catalog.json").read_text())
ROW = 35  # the fallback table's header and row height in pixels (row_height=35 in app/views/layers.py)


def layer_plot(page, script: str):
    """Evaluates `script` with g = the Layers page's plot (the page's first plotly chart)."""
    return page.evaluate(f"() => {{ const g = document.querySelector('.js-plotly-plot'); {script} }}")


def ticked_markers(page) -> int:
    return layer_plot(page, "const s = g._fullData[1].marker.symbol; return Array.isArray(s) ? s.filter(m => m === 'diamond').length : 0;")


def click_tick(page, row: int) -> None:
    """One click on the fallback checkbox of the table's `row` (the grid is a canvas: click by position)."""
    grid = page.get_by_test_id("stDataFrame").first
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 45, box["y"] + ROW * (row + 1) + ROW / 2)


def wait_ticked(page, n: int) -> None:
    page.get_by_text(f"{n} node(s) ticked for fp16 fallback", exact=False).wait_for(timeout=60_000)
    settle(page)


def test_renamed_model_names_ticks_views_ranges_and_cancel_in_a_real_browser(server, tmp_path):
    """On mobile_digits, whose pre-processing folds BatchNormalization, expands HardSwish and names unnamed nodes: the
    table and the hover show the file's own names; three successive ticks take one click each and the plot shows all
    three (and Clear / Top-k); the graph and tensor views render for the culprit; a custom range entered here changes
    that tensor's INT8 scale on rebuild; a cancelled comparison leaves the previous result in place."""
    from playwright.sync_api import sync_playwright

    from engine.run_index import RunIndex, RunStatus

    url, runs = server
    entry = CATALOG["models"]["mobile_digits"]
    culprit, planted = entry["outlier"]["consumer_nodes"][0], entry["outlier"]["channel"]
    with sync_playwright() as p:
        browser = launch(p)
        page = open_app(browser, url)
        page.get_by_label("Sample model").click()
        page.get_by_role("option", name="mobile_digits", exact=False).click()
        page.get_by_text("Model: mobile_digits").wait_for(timeout=60_000)
        settle(page)
        run_comparison(page)

        nav(page, "Layers")
        page.get_by_text(f"Inspect {culprit}").wait_for(timeout=60_000)
        ws = page.evaluate("() => new URLSearchParams(window.location.search).get('ws')")
        (record,) = RunIndex(runs).runs(RunIndex(runs).open_workspace(ws))
        layers = pd.read_csv(record.run_dir / "layers.csv")
        assert layer_plot(page, "return g._fullData[0]._length;") == len(layers)  # every tensor drawn
        # the table names nodes as the file does: the Conv with its folded BatchNormalization, '#index Op' where unnamed
        grid = page.get_by_test_id("stDataFrame").first.locator("[role=gridcell]")
        grid.filter(has_text=culprit).first.wait_for(state="attached", timeout=60_000)  # the grid adds its cells after the page settles
        cells = grid.all_text_contents()
        assert culprit in cells and "mix_conv, mix_bn" in cells and "#0 Conv, #1 BatchNormalization" in cells
        # ...and so does the hover: HardSigmoid_0 is half of the file's unnamed HardSwish #2
        page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
        i = int(layers.index[layers["node"] == "HardSigmoid_0"][0])
        at_script = (f"const xa = g._fullLayout.xaxis2, ya = g._fullLayout.yaxis2, r = g.getBoundingClientRect();"
                     f"return [r.left + xa._offset + xa.l2p({i}), r.top + ya._offset + ya.l2p(g._fullData[1].y[{i}])];")
        page.mouse.move(*layer_plot(page, at_script))
        page.locator(".hoverlayer .hovertext").first.wait_for(timeout=10_000)
        assert "from your file: #2 HardSwish" in page.locator(".hoverlayer .hovertext").first.text_content()

        # three successive ticks, one click each, and the plot shows every one of them
        for n in range(3):
            click_tick(page, n)
            wait_ticked(page, n + 1)
            assert ticked_markers(page) == n + 1
        page.get_by_role("button", name="Clear all ticks").click()
        wait_ticked(page, 0)
        assert ticked_markers(page) == 0
        page.get_by_role("button", name="Tick the top-k culprits").click()  # k = 3 by default, the ranking's top set
        wait_ticked(page, 3)
        assert ticked_markers(page) == 3
        click_tick(page, 1)  # the table made afresh by Top-k takes the next click too: row 1, the second culprit, unticked
        wait_ticked(page, 2)
        assert ticked_markers(page) == 2
        if os.environ.get("QUANTSCOPE_UPDATE_SCREENSHOT") == "1":  # README's screenshot: the plot with a hover, the table
            page.get_by_role("heading", name="Per-layer error").evaluate("e => e.scrollIntoView({block: 'start'})")
            page.mouse.move(*layer_plot(page, at_script))
            page.locator(".hoverlayer .hovertext").first.wait_for(timeout=10_000)
            page.screenshot(path=str(ROOT / "docs" / "layers.png"))
        page.get_by_role("button", name="Clear all ticks").click()
        wait_ticked(page, 0)

        # graph and tensor views of the culprit
        graph = page.get_by_test_id("stGraphVizChart").locator("svg")
        graph.wait_for(timeout=60_000)
        texts = graph.locator("text").all_text_contents()
        assert culprit in texts and "from your file: mix_conv, mix_bn" in texts and "Q/DQ (INT8)" in texts
        find = ("() => [...document.querySelectorAll('.js-plotly-plot')].filter(g => g._fullLayout && g._fullData)"
                ".map(g => [g._fullLayout.xaxis.title.text, Array.from(g._fullData[0].y || [])])"
                ".find(([t]) => t && t.endsWith(' channel') && !t.startsWith('output'))")
        page.wait_for_function(find, timeout=60_000)
        channels = page.evaluate(find)
        assert channels[0] == f"{entry['outlier']['tensor']} channel"
        assert max(range(len(channels[1])), key=channels[1].__getitem__) == planted  # the outlier channel stands out
        if os.environ.get("QUANTSCOPE_UPDATE_SCREENSHOT") == "1":
            page.get_by_role("heading", name=f"Inspect {culprit}").evaluate("e => e.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(500)  # let the scroll finish before the picture (not a synchronisation)
            page.screenshot(path=str(ROOT / "docs" / "inspect.png"))

        # a custom range for the culprit's input, entered here, changes its scale on the next rebuild
        scale = page.get_by_test_id("stMetric").filter(has_text="INT8 scale").first
        before_scale = scale.inner_text()
        for label, value in (("min", "0"), ("max", "8")):
            page.get_by_label(label, exact=True).fill(value)
            page.get_by_label(label, exact=True).press("Enter")
            settle(page)
        page.get_by_role("button", name="Use on the next rebuild").click()
        page.get_by_text(f"Next rebuild: {entry['outlier']['tensor']}=0,8", exact=False).wait_for(timeout=30_000)
        settle(page)
        nav(page, "Rebuild")
        page.get_by_role("button", name="Rebuild with fallback").click()
        page.get_by_text("This rebuild changed: ranges none", exact=False).wait_for(timeout=180_000)
        settle(page)
        # four downloads clicked in quick succession all arrive, named after the user's model: a click used to rerun the
        # page, and the next click during that rerun asked for a file the rerun had dropped (nothing was saved)
        got = []
        page.on("download", lambda d: got.append(d))
        for label in ("Model (.onnx)", "layers.csv", "summary.json", "HTML report", "HTML report, offline"):
            page.get_by_role("button", name=label, exact=True).click()
            page.wait_for_timeout(150)
        for _ in range(150):
            if len(got) == 5:
                break
            page.wait_for_timeout(100)
        names = sorted(d.suggested_filename for d in got)
        stem = re.fullmatch(r"(mobile_digits_int8_1ranges_[0-9a-f]{6})\.onnx", names[0]).group(1)  # the build: one custom range
        assert names == [f"{stem}.onnx", f"{stem}_layers.csv", f"{stem}_report.html", f"{stem}_report_offline.html",
                         f"{stem}_summary.json"]
        assert all(d.failure() is None for d in got)
        offline = next(d for d in got if d.suggested_filename.endswith("_offline.html"))
        assert Path(offline.path()).stat().st_size > 4_000_000  # plotly.js inside
        nav(page, "Layers")
        page.get_by_text(f"Inspect {culprit}").wait_for(timeout=60_000)
        assert before_scale != scale.inner_text() and f"{8 / 127:.6g}" in scale.inner_text()

        # cancel a running comparison: the result before it stays, on the page and on disk
        current = RunIndex(runs).runs(RunIndex(runs).open_workspace(ws))[-1]
        snapshot = {f.name: f.read_bytes() for f in current.run_dir.iterdir() if f.is_file()}
        nav(page, "Compare")
        page.get_by_label("Batch size").fill("1")  # slow on this server: 50 ms a step
        page.get_by_label("Batch size").press("Enter")
        settle(page)
        page.get_by_role("button", name="Run comparison").click()
        page.get_by_role("button", name="Cancel").click(timeout=60_000)
        page.get_by_text("Cancelled the comparison during", exact=False).wait_for(timeout=60_000)
        assert page.get_by_text("hurts the final outputs most", exact=False).count() == 1  # the previous result, still shown
        browser.close()
    last = RunIndex(runs).runs(current.workspace)[-1]
    assert last.status is RunStatus.CANCELLED and last.message.startswith("Cancelled")
    assert {f.name: f.read_bytes() for f in current.run_dir.iterdir() if f.is_file()} == snapshot


def test_upload_flow_in_a_real_browser(server):
    """Upload a model and calibration data (not the bundled sample), run the comparison on them, sweep them and open the
    best configuration on the Layers page."""
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
        page.get_by_text("Loaded resnet_digits.onnx with 128 calibration samples,", exact=False).wait_for(timeout=60_000)
        settle(page)
        nav(page, "Compare")
        page.get_by_text("Model: resnet_digits.onnx", exact=False).wait_for(timeout=30_000)
        page.get_by_role("button", name="Run comparison").click()
        page.get_by_text("hurts the final outputs most", exact=False).first.wait_for(timeout=180_000)
        settle(page)
        # a sweep of the same uploads (MinMax, Entropy, two percentiles), then its best configuration opened on Layers
        nav(page, "Sweep")
        page.get_by_role("button", name="Run sweep").click()
        page.get_by_text("4 configuration(s) of resnet_digits.onnx").wait_for(timeout=180_000)
        assert page.get_by_text("Best by final-output SNR:", exact=False).count() == 1
        settle(page)
        page.get_by_role("button", name="Open on the Layers page").click()
        page.get_by_role("heading", name="Per-layer error").wait_for(timeout=180_000)
        browser.close()
    assert len(list(runs.glob("*/sweeps/sweep_*/sweep.json"))) == 1  # inside the workspace's folder
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
            page.get_by_text("hurts the final outputs most", exact=False).first.wait_for(timeout=60_000)  # restored
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
            assert page.get_by_text("Compare FP32 with its quantized build").count() == 0
            page.get_by_label("Password", exact=True).fill("s3cret")
            page.get_by_label("Password", exact=True).press("Enter")
            page.get_by_test_id("stSidebarNavItems").wait_for(timeout=60_000)  # in, through main.py's router
            settle(page)
            nav(page, "Compare")
            page.get_by_text("Compare FP32 with its quantized build").wait_for(timeout=60_000)
            browser.close()
    finally:
        proc.kill()
        proc.wait(timeout=20)
