"""JupyterHub's /hub/metrics: readable with the token of the hub service "prometheus"
(scope read:metrics, a generated secret file), refused anonymously and to a user's
token; Prometheus scrapes it through the edge (job jupyterhub)."""
from __future__ import annotations

import time

import httpx

from test_monitoring import api, query
from test_notebooks import hub_login, tls, xsrf


def metrics(stack, token: str | None = None, scheme: str = "token") -> httpx.Response:
    headers = {"Authorization": f"{scheme} {token}"} if token else {}
    with httpx.Client(verify=tls(stack), timeout=30) as http:
        return http.get(f"{stack.url('hub')}/hub/metrics", headers=headers)


def test_hub_metrics_need_the_metrics_token(stack):
    anonymous = metrics(stack)
    assert anonymous.status_code == 403, anonymous.status_code
    assert "jupyterhub_" not in anonymous.text
    assert metrics(stack, "not-a-token").status_code == 403
    token = stack.secret("jupyterhub_metrics_token")
    for scheme in ("token", "Bearer"):                      # Prometheus sends Bearer
        answer = metrics(stack, token, scheme)
        assert answer.status_code == 200, answer.text[:300]
        assert "jupyterhub_running_servers" in answer.text and "jupyterhub_total_users" in answer.text


def test_a_users_own_token_does_not_read_the_metrics(stack):
    http, answer = hub_login(stack, "observer")
    try:
        assert answer.status_code == 302
        made = http.post(f"{stack.url('hub')}/hub/api/users/observer/tokens", headers=xsrf(http),
                         json={"note": "stack test: metrics refused", "expires_in": 600})
        assert made.status_code == 201, made.text[:300]
        assert metrics(stack, made.json()["token"]).status_code == 403
    finally:
        http.close()


def test_prometheus_scrapes_the_hub_through_the_edge(stack):
    deadline = time.time() + 180
    while True:
        active = api(stack, "http://127.0.0.1:9090/api/v1/targets?state=active")["data"]["activeTargets"]
        hub = [t for t in active if t["labels"]["job"] == "jupyterhub"]
        if hub and hub[0]["health"] == "up":
            break
        assert time.time() < deadline, f"the jupyterhub target is not up: {hub}"
        time.sleep(5)
    assert hub[0]["scrapeUrl"] == f"https://{stack.hostname('hub')}:443/hub/metrics"
    assert query(stack, 'jupyterhub_total_users{job="jupyterhub"}')
