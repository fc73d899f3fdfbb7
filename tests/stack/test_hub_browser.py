"""JupyterHub in a real browser (issue 9): headless Chromium, trusting the project CA,
opens hub.<domain>, signs in through Keycloak and the edge as a member of jupyter_users,
waits while the hub spawns the user's server and sees JupyterLab. A screenshot of
JupyterLab is saved as a test artifact; the server is stopped from the hub's home page."""
from __future__ import annotations

import json
import subprocess
import time

import pytest

import chromium

USER = "observer"          # in group jupyter_users (federation.yaml), not an admin


@pytest.fixture(scope="module", autouse=True)
def browser_present():
    assert not chromium.missing(), chromium.missing()


def container_exists(stack, username: str) -> bool:
    name = f"jupyter-{stack.setting('COMPOSE_PROJECT_NAME')}-{username}"
    return subprocess.run(["docker", "inspect", name], capture_output=True).returncode == 0


def stop_from_the_home_page(driver, hub: str) -> None:
    """Stop the server as the user would: the hub's home page, "Stop My Server"."""
    from selenium.webdriver.common.by import By
    driver.get(f"{hub}/hub/home")
    stop = chromium.wait_for(driver, lambda d: d.find_element(By.ID, "stop"), 60, "the Stop My Server button")
    # home.js is loaded by require.js after the page: a click before it has hooked the
    # button does nothing
    chromium.wait_for(driver, lambda d: d.execute_script(
        "return !!(window.jQuery && jQuery._data(document.getElementById('stop'), 'events'))"), 60,
        "the hub's home.js to hook Stop My Server")
    stop.click()
    # home.js swaps the buttons once the hub's API has taken the stop
    chromium.wait_for(driver, lambda d: d.find_element(By.ID, "start").text.strip() == "Start My Server"
                      and not d.find_element(By.ID, "stop").is_displayed(), 120, "Start My Server after stopping")


def test_a_researcher_signs_in_and_gets_jupyterlab(stack):
    from selenium.webdriver.common.by import By
    hub = stack.url("hub")
    password = json.loads(stack.secret("keycloak_users"))[USER]
    with chromium.browser(stack.ca, stack.fed.domain, timeout=120) as driver:
        driver.get(hub + "/")
        # the hub's own login page: one button, to the federation's single sign-on
        button = chromium.wait_for(driver, lambda d: d.find_element(By.PARTIAL_LINK_TEXT, "Sign in with"), 60,
                                   "the hub's sign-in button")
        button.click()
        chromium.sign_in_at_keycloak(driver, USER, password)
        try:
            # back at the hub, which spawns the server (its progress page) and then sends
            # the browser to the server's JupyterLab; the spawn pulls nothing (image present)
            chromium.wait_for(driver, lambda d: d.current_url.startswith(f"{hub}/user/{USER}/lab"), 300,
                              f"{USER}'s server to spawn and JupyterLab to open")
            shell = chromium.wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, ".jp-LabShell"), 120,
                                      "JupyterLab's shell")
            chromium.wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, ".jp-Launcher").is_displayed(),
                              120, "JupyterLab's launcher")
            assert shell.is_displayed()
            assert "JupyterLab" in driver.title, driver.title
            assert container_exists(stack, USER)
            time.sleep(2)          # let the launcher's icons finish drawing
            chromium.screenshot(driver, "jupyterlab")
        finally:
            stop_from_the_home_page(driver, hub)
    deadline = time.time() + 60
    while container_exists(stack, USER):
        assert time.time() < deadline, f"{USER}'s notebook container is still there after stopping"
        time.sleep(2)
