"""The reference kiosk page in a real browser (Debian's chromium + chromium-driver, selenium).

The daemon runs the embedded default as `make run` does (only its state dir and port differ);
the browser runs the citizen flow headless and the test asserts what the page shows at each
step. Screenshots go to $KIOSK_SCREENSHOTS (default: a temp dir), never into git.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from gateway.config import embedded_default_text
from tests.support.daemon import DaemonProcess, spawn_daemon, unix_session
from tests.support.mosquitto import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CODE = re.compile(r"your code is (\d{6})")


def screenshots() -> Path:
    path = Path(
        os.environ.get("KIOSK_SCREENSHOTS") or Path(tempfile.gettempdir()) / "edge-gateway-kiosk-shots"
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.asynccontextmanager
async def embedded(
    state_dir: Path, api_extra: str = "", *, print_time_s: float = 0.5
) -> AsyncIterator[tuple[DaemonProcess, str]]:
    """The embedded default with its own state dir and port (and `api_extra` in [api])."""
    port = free_port()
    # Every simulated printer of the default (the hall's pool has two).
    text = embedded_default_text().replace("sim_print_time_s = 0.5", f"sim_print_time_s = {print_time_s}")
    text = text.replace('state_dir = ""', f'state_dir = "{state_dir}"', 1)
    listen = f'http_listen = "127.0.0.1:{port}"'
    text = text.replace('http_listen = "127.0.0.1:8089"', f"{listen}\n{api_extra}", 1)
    assert listen in text and str(state_dir) in text
    config = state_dir / "gateway.toml"
    config.write_text(text)
    dp = await spawn_daemon(config)
    try:
        await dp.wait_for_output(r"kiosk page: ")
        yield dp, f"http://127.0.0.1:{port}"
    finally:
        assert await dp.stop() == 0


@pytest.fixture
async def gateway(state_dir: Path) -> AsyncIterator[tuple[DaemonProcess, str]]:
    async with embedded(state_dir) as running:
        yield running


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not shutil.which(path):
            pytest.fail(f"{path} is missing: apt-get install -y {package} (scripts/system-deps.sh)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1000,1100",
        # A DNS-rebinding name: resolves to 127.0.0.1, the Host header still says rebind.test.
        "--host-resolver-rules=MAP rebind.test 127.0.0.1",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_script_timeout(15)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver, what: str, predicate: Callable[[WebDriver], Any], timeout: float = 20) -> Any:
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(predicate)
    except TimeoutException as err:
        message = driver.find_element(By.ID, "message").text if driver.find_elements(By.ID, "message") else ""
        raise AssertionError(f"page never showed {what}; message: {message!r}") from err


def screen(driver: WebDriver, name: str) -> None:
    wait(driver, f"screen {name}", lambda d: d.execute_script("return document.body.dataset.view") == name)


def click(driver: WebDriver, element_id: str) -> None:
    wait(driver, f"#{element_id} enabled", lambda d: d.find_element(By.ID, element_id).is_enabled())
    driver.find_element(By.ID, element_id).click()


def message(driver: WebDriver) -> str:
    return str(driver.find_element(By.ID, "message").text)


def kiosk_flow(driver: WebDriver, url: str, output: list[str]) -> dict[str, str]:
    """One citizen with an SMS code, one with the face check; returns what the page showed."""
    shown: dict[str, str] = {}
    shots = screenshots()
    driver.get(f"{url}/kiosk/")
    screen(driver, "welcome")
    wait(
        driver,
        "three devices online",
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#devices li.online")) == 3,
    )
    driver.save_screenshot(str(shots / "1-welcome.png"))

    click(driver, "start")
    screen(driver, "idcard")
    assert driver.find_element(By.ID, "session-state").text == "Session open"
    click(driver, "read-card")
    screen(driver, "factor")
    shown["card"] = message(driver)

    click(driver, "choose-sms")
    screen(driver, "otp")
    code = wait(
        driver,
        "an SMS code on the console",
        lambda _d: next((m[1] for line in output if (m := CODE.search(line))), None),
    )
    field = driver.find_element(By.ID, "otp-code")
    field.send_keys("000000" if code != "000000" else "111111")
    click(driver, "otp-submit")
    wait(driver, "a friendly wrong-code message", lambda d: "not right" in message(d))
    shown["wrong_code"] = message(driver)
    driver.save_screenshot(str(shots / "2-wrong-code.png"))
    field.clear()
    field.send_keys(code)
    click(driver, "otp-submit")
    screen(driver, "service")

    driver.find_element(By.CSS_SELECTOR, '[data-service="pension-certificate"]').click()
    screen(driver, "receipt")
    wait(
        driver,
        "the printed receipt",
        lambda d: "Pension certificate" in d.find_element(By.ID, "receipt").text,
    )
    shown["receipt"] = driver.find_element(By.ID, "receipt").text
    shown["receipt_title"] = driver.find_element(By.ID, "receipt-title").text
    driver.save_screenshot(str(shots / "3-receipt.png"))
    click(driver, "to-rating")
    screen(driver, "rating")
    driver.find_element(By.CSS_SELECTOR, '[data-rating="5"]').click()
    screen(driver, "done")
    shown["rated"] = message(driver)
    shown["handoff"] = driver.find_element(By.ID, "handoff").text
    assert driver.find_element(By.ID, "session-state").text == "No session"
    driver.save_screenshot(str(shots / "4-done.png"))

    # A second citizen proves the second factor with the (simulated) face check.
    click(driver, "again")
    screen(driver, "welcome")
    click(driver, "bigger")
    assert "large" in str(driver.find_element(By.TAG_NAME, "body").get_attribute("class"))
    click(driver, "start")
    screen(driver, "idcard")
    click(driver, "read-card")
    screen(driver, "factor")
    click(driver, "choose-face")
    screen(driver, "service")
    shown["face"] = message(driver)
    driver.save_screenshot(str(shots / "5-face-large-type.png"))
    click(driver, "cancel")
    screen(driver, "done")
    return shown


async def test_the_page_runs_the_citizen_flow_in_chromium(
    gateway: tuple[DaemonProcess, str], browser: WebDriver
) -> None:
    dp, url = gateway
    shown = await asyncio.to_thread(kiosk_flow, browser, url, dp.stdout_lines)
    assert shown["card"] == "Card read."
    assert shown["wrong_code"] == "That code is not right. Please check the SMS and try again."
    assert shown["receipt_title"] == "Please take your receipt"
    assert "Community service centre" in shown["receipt"] and "Request " in shown["receipt"]
    assert "member of staff" in shown["handoff"]
    assert shown["rated"] == "Thank you for your rating."  # the gateway took the feedback (202)
    assert shown["face"] == "Thank you, that is you."
    # The transactions reached the in-process cloud and verified there; nothing was refused.
    feed = [line for line in dp.stdout_lines if line.startswith("[dev-cloud]")]
    assert any(" ok edge-dev tx#" in line and " transaction " in line for line in feed)
    assert not any(" !! " in line for line in feed)
    async with unix_session(dp.socket_path) as http:
        status = await (await http.get("/v1/status")).json()
    assert status["sessions"]["open"] == 0 and status["sessions"]["created_total"] == 2


class _ForeignPage(http.server.BaseHTTPRequestHandler):
    """A page on another origin that tries to use the kiosk API."""

    target = ""

    def do_GET(self) -> None:
        page = f"""<!doctype html><title>foreign</title><script>
window.results = {{}};
fetch("{self.target}/v1/devices").then(r => window.results.get = r.status,
  e => window.results.get = "blocked: " + e);
fetch("{self.target}/v1/sessions", {{method: "POST", headers: {{"Content-Type": "application/json"}},
  body: JSON.stringify({{kind: "citizen"}})}}).then(r => window.results.post = r.status,
  e => window.results.post = "blocked: " + e);
</script>""".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def foreign_and_rebinding(driver: WebDriver, url: str) -> tuple[dict[str, Any], str]:
    _ForeignPage.target = url
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ForeignPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        driver.get(f"http://127.0.0.1:{server.server_address[1]}/")
        settled = "return Object.keys(window.results).length == 2 ? window.results : null"
        results: dict[str, Any] = wait(
            driver, "both foreign requests settled", lambda d: d.execute_script(settled)
        )
    finally:
        server.shutdown()
        server.server_close()
    port = url.rsplit(":", 1)[1]
    driver.get(f"http://rebind.test:{port}/v1/health")
    time.sleep(0.2)
    return results, str(driver.find_element(By.TAG_NAME, "body").text)


async def test_from_the_browser_a_foreign_origin_and_a_rebinding_host_are_refused(
    gateway: tuple[DaemonProcess, str], browser: WebDriver
) -> None:
    dp, url = gateway
    results, rebinding = await asyncio.to_thread(foreign_and_rebinding, browser, url)
    # The browser may not read the answers (no CORS for that origin), and the POST never ran.
    assert str(results["get"]).startswith("blocked"), results
    assert str(results["post"]).startswith("blocked"), results
    assert "host-not-allowed" in rebinding
    async with unix_session(dp.socket_path) as http:
        status = await (await http.get("/v1/status")).json()
    assert status["sessions"]["created_total"] == 0


def idle_flow(driver: WebDriver, url: str) -> tuple[str, str]:
    driver.get(f"{url}/kiosk/")
    screen(driver, "welcome")
    click(driver, "start")
    screen(driver, "idcard")
    overlay = driver.find_element(By.ID, "idle")
    wait(driver, "the idle warning", lambda _d: overlay.is_displayed(), timeout=15)
    first = int(driver.find_element(By.ID, "idle-count").text)
    wait(driver, "the countdown", lambda d: int(d.find_element(By.ID, "idle-count").text) < first)
    driver.save_screenshot(str(screenshots() / "6-idle-warning.png"))
    counted = f"{first} then {driver.find_element(By.ID, 'idle-count').text}"
    screen(driver, "done")
    return counted, str(driver.find_element(By.ID, "handoff").text)


async def test_the_idle_warning_counts_down_and_hands_off_to_staff(
    state_dir: Path, browser: WebDriver
) -> None:
    async with embedded(state_dir, "session_idle_timeout_s = 6\nidle_warning_s = 4") as (_dp, url):
        counted, handoff = await asyncio.to_thread(idle_flow, browser, url)
    first, _, later = counted.partition(" then ")
    assert 0 < int(later) < int(first) <= 4
    assert handoff.startswith("Your session ended because nothing happened for a while.")
    assert "member of staff" in handoff


def queue_flow(driver: WebDriver, url: str) -> tuple[str, str]:
    driver.get(f"{url}/kiosk/")
    screen(driver, "welcome")
    click(driver, "start")
    screen(driver, "idcard")
    click(driver, "read-card")
    screen(driver, "factor")
    click(driver, "choose-face")
    screen(driver, "service")
    driver.find_element(By.CSS_SELECTOR, '[data-service="residence-certificate"]').click()
    screen(driver, "receipt")
    waiting = wait(
        driver,
        "a queue position",
        lambda d: (t := d.find_element(By.ID, "queue").text) and "ahead" in t and t,
    )
    driver.save_screenshot(str(screenshots() / "7-queue.png"))
    wait(
        driver,
        "the receipt",
        lambda d: "Residence certificate" in d.find_element(By.ID, "receipt").text,
        timeout=40,
    )
    return str(waiting), str(driver.find_element(By.ID, "receipt-title").text)


async def test_the_page_shows_its_place_in_the_printer_queue(state_dir: Path, browser: WebDriver) -> None:
    async with embedded(state_dir, print_time_s=3.0) as (dp, url), unix_session(dp.socket_path) as http:
        # Another kiosk app on the Unix socket keeps both printers of the hall's pool busy first
        # (one printing and two waiting on each, so some are still waiting when the page prints).
        resp = await http.post("/v1/sessions", json={"kind": "citizen", "station": "k1"})
        other = await resp.json()
        auth = {"Authorization": f"Bearer {other['token']}"}
        for n in range(6):
            body = {"lines": [f"other receipt {n}"]}
            resp = await http.post(f"/v1/sessions/{other['id']}/print", headers=auth, json=body)
            assert resp.status == 202
        waiting, title = await asyncio.to_thread(queue_flow, browser, url)
    assert re.fullmatch(r"Waiting for the printer: [1-3] ahead of you, about \d+ s\.", waiting), waiting
    assert title == "Please take your receipt"
