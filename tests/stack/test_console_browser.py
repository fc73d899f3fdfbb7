"""The federation overview (Prometheus' console page, services/prometheus/consoles) in a
real browser: headless Chromium trusting the project CA, through the edge's
prometheus.<domain> and its Keycloak sign-on, as a person with the role would see it.
A screenshot of the page is saved as a test artifact."""
from __future__ import annotations

import json

import pytest

import chromium
import kcadmin

PAGE = "/consoles/federation.html"


@pytest.fixture(scope="module", autouse=True)
def browser_present():
    assert not chromium.missing(), chromium.missing()


@pytest.fixture(scope="module")
def viewer(stack) -> str:
    """observer, with the realm role monitoring_viewer (group monitoring_viewers)."""
    return kcadmin.add_to_group(stack, "observer", "monitoring_viewers")


def open_browser(stack):
    return chromium.browser(stack.ca, stack.fed.domain)


def test_an_unauthenticated_browser_is_sent_to_sign_in(stack):
    from selenium.webdriver.common.by import By
    with open_browser(stack) as driver:
        # from the landing page's link, as a newcomer finds it
        driver.get(stack.url("landing") + "/")
        link = chromium.wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, f'a[href$="{PAGE}"]'), 30,
                                 "the landing page's link to the federation overview")
        assert link.get_attribute("href") == stack.url("prometheus") + PAGE
        link.click()
        chromium.wait_for(driver, lambda d: "kc-form-login" in d.page_source, 60, "Keycloak's sign-in form")
        assert driver.current_url.startswith(stack.url("auth") + "/realms/flowerfl/protocol/openid-connect/auth")
        assert "client_id=monitoring" in driver.current_url
        assert "SuperNodes per organisation" not in driver.page_source
        chromium.screenshot(driver, "federation-overview-sign-in")


def test_a_viewer_sees_every_organisations_supernodes_and_a_run(stack, viewer):
    from selenium.webdriver.common.by import By

    from stackenv import completed_run, wait_all_online
    wait_all_online(stack)
    run_id = completed_run()
    organisations = {o.name for o in stack.fed.organisations}
    password = json.loads(stack.secret("keycloak_users"))[viewer]
    with open_browser(stack) as driver:
        driver.get(stack.url("prometheus") + PAGE)
        chromium.sign_in_at_keycloak(driver, viewer, password)
        # back at the page asked for, through oauth2-proxy's callback
        chromium.wait_for(driver, lambda d: d.current_url.startswith(stack.url("prometheus") + PAGE), 60,
                          "the console page after sign-in")
        assert driver.title == "Federation overview"

        def states(d) -> dict[str, str]:
            rows = d.find_elements(By.CSS_SELECTOR, "#supernodes tr.organisation")
            return {r.get_attribute("data-organisation"): r.find_elements(By.TAG_NAME, "td")[3].text for r in rows}

        def runs(d) -> dict[str, str]:
            return {r.get_attribute("data-run"): r.find_elements(By.TAG_NAME, "td")[2].text
                    for r in d.find_elements(By.CSS_SELECTOR, "#recent-runs tr.run")}

        def all_online_and_the_run(d) -> bool:
            if states(d) == {o: "online" for o in organisations} and runs(d).get(run_id) == "finished:completed":
                return True
            d.refresh()            # fl-exporter is scraped every 30 s
            return False

        chromium.wait_for(driver, all_online_and_the_run, 180,
                          f"every organisation online {organisations} and run {run_id} completed, on the page")
        counts = {r.find_elements(By.TAG_NAME, "td")[0].text: int(r.find_elements(By.TAG_NAME, "td")[1].text)
                  for r in driver.find_elements(By.CSS_SELECTOR, "#runs-by-status tr")[1:]}
        assert counts.get("finished:completed", 0) >= 1, counts
        # the other sections render (with data or saying there is none), and the edge's
        # certificates are there: the blackbox exporter probes every public hostname
        for section in ("runs-by-status", "recent-runs", "round-metrics", "certificates", "alerts"):
            assert driver.find_element(By.ID, section).is_displayed(), section
        hosts = {r.find_element(By.TAG_NAME, "td").text
                 for r in driver.find_elements(By.CSS_SELECTOR, "#certificates tr.certificate")}
        assert hosts == set(stack.rendered()["hostnames"]), hosts
        assert "error executing template" not in driver.page_source.lower()
        chromium.screenshot(driver, "federation-overview", full_page=True)
