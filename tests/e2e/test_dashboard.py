"""The live dashboard in a real browser: the real server process and Debian's headless Chromium driven by Playwright.

Needs ``/usr/bin/chromium`` (``scripts/install-browser.sh``) and the ``playwright`` Python package (its own browser
download is never used). Without them the test skips loudly; with ``CI=true`` it fails instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.e2e.server import ServerProcess
from tests.openapi_contract import live_contract_hooks

pytestmark = pytest.mark.e2e

CHROMIUM = Path(os.environ.get("SPOTIK_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPORTS = Path(__file__).resolve().parents[2] / "bench" / "reports"
WAIT_MS = 20_000  # every wait below is for an outcome, bounded by this
TRAFFIC = 25


def unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true and {message}: the run fails instead of skipping", pytrace=False)
    pytest.skip(f"SKIPPED LOUDLY: {message}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    # The page polls every second and the test adds a burst of traffic: keep the burst limiter out of the way.
    process = ServerProcess(tmp_path / "storage", env={"RATE_LIMITING_ENABLED": "false"})
    try:
        process.wait_until_serving()
        yield process
    finally:
        process.stop()


def test_dashboard_shows_live_numbers_in_chromium(server: ServerProcess, tmp_path: Path) -> None:
    page_response = httpx2.get(f"{server.base_url}/dashboard", timeout=10)
    assert page_response.status_code == 200
    if not CHROMIUM.is_file():
        unavailable(f"{CHROMIUM} is missing (run scripts/install-browser.sh)")
    try:
        from playwright.sync_api import ConsoleMessage, Error, sync_playwright
    except ImportError as exc:
        unavailable(f"the playwright package is not installed ({exc})")

    console_errors: list[str] = []
    page_errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            console_errors.append(message.text)

    with sync_playwright() as playwright:
        # Playwright passes the profile as --user-data-dir itself (a persistent context).
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = browser.new_page()
            page.on("console", on_console)
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            response = page.goto(f"{server.base_url}/dashboard", wait_until="load")
            assert response is not None and response.status == 200

            # Waits are function expressions: a string expression would need eval, which the page's CSP refuses.
            # Two polls rendered: rates and latency need a previous sample.
            page.wait_for_function("() => Number(document.body.dataset.updates || 0) >= 2", timeout=WAIT_MS)
            assert page.inner_text("#health") == "healthy"
            assert page.inner_text("#status") == "live"
            before = int(page.inner_text("#req-total"))
            memory = float(page.inner_text("#memory"))
            assert memory > 0
            assert "database · driver" in page.inner_text("#subsystems")

            with httpx2.Client(
                base_url=server.base_url, timeout=10, event_hooks=live_contract_hooks(server.base_url)
            ) as client:
                for _ in range(TRAFFIC):
                    assert client.get("/api/ping").status_code == 200

            # The page itself polls too, so the total grows by at least the traffic we sent.
            page.wait_for_function(
                "(least) => Number(document.getElementById('req-total').textContent) >= least",
                arg=before + TRAFFIC,
                timeout=WAIT_MS,
            )
            after = int(page.inner_text("#req-total"))
            assert after >= before + TRAFFIC
            page.wait_for_function("() => Number(document.getElementById('req-rate').textContent) > 0", timeout=WAIT_MS)
            assert float(page.inner_text("#latency")) >= 0
            codes = page.inner_text("#codes")
            assert "200" in codes

            # A few more polls so that the charts show the burst, then the picture.
            updates = int(page.evaluate("() => document.body.dataset.updates"))
            page.wait_for_function(
                "(least) => Number(document.body.dataset.updates) >= least", arg=updates + 3, timeout=WAIT_MS
            )
            screenshot = tmp_path / "dashboard.png"
            page.screenshot(path=str(screenshot), full_page=True)
        except Error as exc:
            raise AssertionError(f"browser step failed: {exc}\nserver log:\n{''.join(server.log)}") from exc
        finally:
            browser.close()

    assert screenshot.stat().st_size > 10_000  # a rendered page, not a blank one
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if REPORTS.is_dir():
        shutil.copyfile(screenshot, REPORTS / "dashboard.png")
    assert page_errors == [], page_errors
    assert console_errors == [], console_errors  # a CSP violation or a failed fetch would show here
