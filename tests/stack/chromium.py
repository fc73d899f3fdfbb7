"""A real browser for the stack tests: Debian's headless Chromium driven by selenium
through Debian's chromedriver (`.ci/run` installs both; nothing downloads a browser).

Each browser starts with a fresh profile in a temporary HOME: its user-data-dir, and an
NSS database (~/.pki/nssdb, where Chromium on Linux keeps the user's trusted roots) that
holds the test deployment's project CA and nothing else of ours. Certificate errors are
not ignored: a page whose certificate does not chain to that CA fails to load, as it
would for a user who never imported the CA.

Screenshots are test artifacts in ARTIFACTS (the checkout's git-ignored test-artifacts/,
outside every instance's files), printed as they are saved.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

from fedops import paths

CHROMIUM = Path(os.environ.get("FL_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("FL_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
ARTIFACTS = paths.TEST_ARTIFACTS_DIR / "screenshots"
# The flags ../shared/ENVIRONMENT.md names: no sandbox (root in CI), no GPU, and no
# background connections to Google's services (refused on a closed network).
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
         "--disable-dev-shm-usage", "--window-size=1366,900")
CA_NICKNAME = "fl project CA (test deployment)"


def missing() -> str:
    """Why no browser can run here ('' when one can): the skip reason for browser tests."""
    for tool, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not tool.is_file():
            return f"{tool} is missing: apt-get install {package} (.ci/run does)"
    if not shutil.which("certutil"):
        return "certutil is missing: apt-get install libnss3-tools (.ci/run does)"
    return ""


def trust(home: Path, ca: Path) -> Path:
    """A new NSS database in home/.pki/nssdb trusting `ca` for TLS servers (C,,)."""
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True)
    for argv in (["certutil", "-N", "-d", f"sql:{db}", "--empty-password"],
                 ["certutil", "-A", "-d", f"sql:{db}", "-n", CA_NICKNAME, "-t", "C,,", "-i", str(ca)]):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return db


@contextlib.contextmanager
def browser(ca: Path | None, domain: str = "", timeout: float = 60) -> Iterator:
    """A selenium WebDriver for a fresh headless Chromium that trusts `ca` (None: no
    project CA, as a newcomer's browser). Public names under `domain` resolve to
    127.0.0.1 (Chromium does that for *.localhost itself; the rule covers any domain)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    home = Path(tempfile.mkdtemp(prefix="fl-chromium-"))
    try:
        if ca is not None:
            trust(home, ca)
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={home / 'profile'}")
        if domain:
            options.add_argument(f"--host-resolver-rules=MAP {domain} 127.0.0.1, MAP *.{domain} 127.0.0.1")
        # HOME decides where Chromium looks for the NSS database; chromedriver passes its
        # environment on to the browser.
        env = {**os.environ, "HOME": str(home)}
        service = Service(executable_path=str(CHROMEDRIVER), env=env,
                          log_output=str(home / "chromedriver.log"))
        driver = webdriver.Chrome(service=service, options=options)
        driver.set_page_load_timeout(timeout)
        try:
            yield driver
        finally:
            driver.quit()
    finally:
        shutil.rmtree(home, ignore_errors=True)


def screenshot(driver, name: str, full_page: bool = False) -> Path:
    """Save the page as ARTIFACTS/<name>.png and say where. `full_page`: the window is
    made as tall as the document first (at most 4000 pixels)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    if full_page:
        height = driver.execute_script(
            "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)")
        driver.set_window_size(driver.get_window_size()["width"], min(int(height) + 120, 4000))
    assert driver.save_screenshot(str(path)), f"no screenshot saved to {path}"
    print(f"\nscreenshot: {path}")
    return path


def wait_for(driver, condition: Callable, timeout: float = 60, what: str = "") -> object:
    """Poll `condition(driver)` until it is truthy; fail naming `what` and the page."""
    deadline = time.time() + timeout
    while True:
        try:
            value = condition(driver)
        except Exception:  # noqa: BLE001 - the page is still changing
            value = None
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"waited {timeout:.0f}s for {what or condition}: at {driver.current_url} "
                                 f"({driver.title!r})")
        time.sleep(0.5)


def sign_in_at_keycloak(driver, username: str, password: str, timeout: float = 60) -> None:
    """On Keycloak's login form (kc-form-login), type and submit as a person would."""
    from selenium.webdriver.common.by import By
    wait_for(driver, lambda d: d.find_element(By.ID, "kc-form-login"), timeout, "Keycloak's sign-in form")
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "kc-login").click()
