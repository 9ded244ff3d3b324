"""The web page in real headless Chromium (Debian's chromium and chromedriver).

``scripts/dev test`` installs both with apt when they are missing. The page must list
the voices, speak while streaming into its <audio> element, show latency and real-time
factor, ask for the API key when one is set, and log no console errors. A screenshot is
kept under ``test-artifacts/`` for a person to look at.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import REPO, ServerProcess

ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    assert chromium and driver_path, "install Debian's chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--mute-audio",
                 "--autoplay-policy=no-user-gesture-required",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=900,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _speak_and_check(driver: webdriver.Chrome) -> None:
    wait = WebDriverWait(driver, 60)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#voice option"))
    options = [o.text for o in driver.find_elements(By.CSS_SELECTOR, "#voice option")]
    assert "en_US-joe-medium" in options
    groups = [g.get_attribute("label") for g in driver.find_elements(By.TAG_NAME, "optgroup")]
    assert "en_US" in groups
    driver.find_element(By.ID, "speak").click()
    wait.until(lambda d: d.find_element(By.ID, "status").text in ("Done.", "") or
               "error" in (d.find_element(By.ID, "status").get_attribute("class") or ""))
    wait.until(lambda d: d.find_element(By.ID, "status").text == "Done.")
    buffered = driver.execute_script(
        "const b = document.getElementById('player').buffered;"
        "return b.length ? b.end(b.length - 1) : 0;")
    assert buffered > 3.0, buffered  # the two-sentence default text, several seconds
    latency = driver.find_element(By.ID, "latency").text
    assert latency.endswith(" ms"), latency
    rtf = float(driver.find_element(By.ID, "rtf").text)
    assert 0 < rtf < 2, rtf


def _console_errors(driver: webdriver.Chrome) -> list[str]:
    entries: list[dict[str, str]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return [entry["message"] for entry in entries if entry["level"] == "SEVERE"]


def test_web_page_speaks_while_streaming(server: ServerProcess, browser: webdriver.Chrome) -> None:
    browser.get(server.http_url + "/")
    assert browser.title == "Chorus"
    _speak_and_check(browser)
    assert not browser.find_element(By.ID, "key-row").is_displayed()  # no key configured
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "web-page.png"))
    assert _console_errors(browser) == []


def test_web_page_asks_for_the_api_key(tmp_path: Path, browser: webdriver.Chrome) -> None:
    server = ServerProcess(["--api-key", "s3cret"], tmp_path / "log")
    try:
        browser.get(server.http_url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: d.find_element(By.ID, "key-row").is_displayed())
        assert "API key" in browser.find_element(By.ID, "status").text
        key = browser.find_element(By.ID, "api-key")
        key.send_keys("s3cret")
        browser.execute_script(
            "document.getElementById('api-key').dispatchEvent(new Event('change'))")
        _speak_and_check(browser)
        # The only console errors allowed are the 401s that made the page ask.
        assert all("401" in message for message in _console_errors(browser))
    finally:
        assert server.terminate() == 0
