"""Headless Chromium for the console's browser tests (selenium, Debian's chromium + chromedriver).

Screenshots go to test-artifacts/console/ (gitignored): one at each named step and one when a
test fails, so a CI failure can be looked at rather than guessed at.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "console"
DOCS = Path(__file__).resolve().parent.parent / "docs"
# The README's pictures are refreshed on request only, so that a test run
# leaves the checkout as it found it: STOPCOCK_DOCS_SCREENSHOTS=1.
REFRESH_DOCS = os.environ.get("STOPCOCK_DOCS_SCREENSHOTS") == "1"
WAIT = 30.0

T = TypeVar("T")


def chromium() -> webdriver.Chrome:
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--force-prefers-reduced-motion",
    ):
        options.add_argument(flag)
    # The page's own console messages (errors in modules, CSP refusals) are read back by tests.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


class Browser:
    """One Chromium window on one Stopcock (`base`: its REST address; Envoy serves the console)."""

    def __init__(self, driver: webdriver.Chrome, base: str, test: str) -> None:
        self.driver = driver
        self.base = base
        self.test = re.sub(r"[^A-Za-z0-9_.-]+", "_", test)

    def open(self, fragment: str = "#/") -> None:
        self.driver.get(f"{self.base}/{fragment}")

    def go(self, fragment: str) -> None:
        """Follows a hash route without reloading the page (as a link would)."""
        self.driver.execute_script("location.hash = arguments[0]", fragment)

    def wait(self, check: Callable[[webdriver.Chrome], T], what: str, timeout: float = WAIT) -> T:
        try:
            return WebDriverWait(
                self.driver, timeout, ignored_exceptions=(StaleElementReferenceException,)
            ).until(check, f"waiting for {what}")
        except TimeoutException:
            self.screenshot("timeout")
            raise

    def css(self, selector: str) -> WebElement:
        return self.wait(lambda d: d.find_element("css selector", selector), selector)

    def all(self, selector: str) -> list[WebElement]:
        return self.driver.find_elements("css selector", selector)

    def script(self, source: str, *args: Any) -> Any:
        return self.driver.execute_script(source, *args)

    def screenshot(self, step: str, also: Path | None = None) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{self.test}-{step}.png"
        self.driver.save_screenshot(str(path))
        if also is not None and REFRESH_DOCS:
            also.write_bytes(path.read_bytes())
        return path

    def page_errors(self) -> list[str]:
        """Severe messages the page logged (script errors, refused resources)."""
        return [str(e["message"]) for e in self.log() if e["level"] == "SEVERE"]

    def log(self) -> list[dict[str, Any]]:
        """What the page wrote to its console (and what Chromium said about it)."""
        entries: list[dict[str, Any]] = self.driver.get_log("browser")  # type: ignore[no-untyped-call]
        return entries


@contextlib.contextmanager
def browser(base: str, test: str) -> Iterator[Browser]:
    driver = chromium()
    b = Browser(driver, base, test)
    failed = True
    try:
        yield b
        failed = False
    finally:
        if failed:
            with contextlib.suppress(Exception):
                b.screenshot("failure")
        driver.quit()
