"""Grafana's dashboards against the live Prometheus (task list 5.2): every panel's query,
asked the way Grafana asks it, returns at least one series on the test deployment.

The queries are the product, so this needs no Grafana (whose image cannot be pulled
where no registry is reachable): each panel's PromQL is read from
services/grafana/dashboards and sent to the test deployment's Prometheus from inside its
own container (it is not published), as tests/stack/test_monitoring.py does. A range
panel is a range query over the dashboard's default window (the last 6 hours, step one
scrape interval), an instant panel (table, bar gauge) an instant query.

Template variables are substituted the documented way (tests/support/grafana_dashboards.py):
every dashboard variable at its "All" value (".*", used only as `label=~"$var"`),
`$__rate_interval`/`$__interval` four scrape intervals, `$__range` one hour.

The GPU dashboard cannot return series here: no GPU and no DCGM exporter run on this
machine. Its queries must still be valid PromQL: Prometheus answers "success" (a query
it cannot parse is answered "error" with HTTP 400).

When the test deployment runs Grafana too (its image was on the engine), the last tests
check Grafana itself through the edge: healthy on PostgreSQL, the four dashboards and
the data source provisioned, and Keycloak sign-on with the Viewer role."""
from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import pytest

import grafana_dashboards as gd
from fedops import compose, engine

BOARDS = gd.dashboards()
QUERIES = [q for name, d in BOARDS.items() for q in gd.queries(name, d)]
WINDOW = 6 * 3600                       # the dashboards' default time range (now-6h)
NO_DCGM_HERE = {"gpu"}                  # dashboards whose exporter does not run on this machine


def prometheus(stack, path: str, params: dict) -> dict:
    """GET Prometheus' HTTP API from inside its container (python3 is there); the JSON
    answer, errors included (a 400 carries status "error" and the parser's message)."""
    url = f"http://127.0.0.1:9090{path}?{urlencode(params)}"
    code = ("import json,sys,urllib.request,urllib.error\n"
            "try:\n"
            f"    body = urllib.request.urlopen({url!r}, timeout=30).read()\n"
            "except urllib.error.HTTPError as e:\n"
            "    body = e.read()\n"
            "sys.stdout.write(body.decode())")
    proc = stack.compose("exec", "-T", "prometheus", "python3", "-c", code)
    return json.loads(proc.stdout)


def scrape_interval(stack) -> str:
    return compose.settings().get("FL_PROMETHEUS_SCRAPE_INTERVAL") or "30s"


def ask(stack, q: gd.Query) -> tuple[str, dict]:
    """The query as Grafana sends it for this panel: (PromQL, Prometheus' answer)."""
    interval = scrape_interval(stack)
    expr = gd.substitute(q.expr, BOARDS[q.dashboard], interval)
    now = time.time()
    if q.instant:
        return expr, prometheus(stack, "/api/v1/query", {"query": expr, "time": f"{now:.3f}"})
    return expr, prometheus(stack, "/api/v1/query_range", {
        "query": expr, "start": f"{now - WINDOW:.3f}", "end": f"{now:.3f}", "step": f"{gd.seconds(interval)}s"})


@pytest.fixture(scope="module")
def federation_history(stack):
    """What the federation dashboards show exists: every SuperNode online and a finished
    run with its rounds, seen by at least one scrape of the FL exporter."""
    from stackenv import completed_run, wait_all_online
    wait_all_online(stack)
    run_id = completed_run(rounds=2)
    deadline = time.time() + 180
    wanted = (f'fl_run_status{{run_id="{run_id}"}}', "fl_supernodes_online", "probe_success",
              "node_load1", "pg_up", "nginx_up")
    while True:
        missing = [m for m in wanted if not prometheus(stack, "/api/v1/query", {"query": m})["data"]["result"]]
        if not missing:
            return run_id
        assert time.time() < deadline, f"Prometheus has no series yet for {missing}"
        time.sleep(5)


@pytest.mark.parametrize("q", QUERIES, ids=lambda q: q.id)
def test_every_panel_query_returns_a_series(stack, federation_history, q):
    expr, answer = ask(stack, q)
    assert answer.get("status") == "success", f"{q}: Prometheus refused {expr!r}: {answer.get('error')}"
    if q.dashboard in NO_DCGM_HERE:
        return          # valid PromQL is all this machine can show (no GPU, no DCGM exporter)
    series = answer["data"]["result"]
    assert series, f"{q}: no series for {expr!r}"
    print(f"\n{q}: {len(series)} series")


VARIABLES = [(name, v) for name, d in BOARDS.items() for v in gd.defined_variables(d).values()]


@pytest.mark.parametrize(("board", "variable"), VARIABLES, ids=[f"{b}-{v['name']}" for b, v in VARIABLES])
def test_every_variable_offers_values(stack, federation_history, board, variable):
    """A dashboard's drop-down (label_values) has something to choose from."""
    selector, label = gd.label_values(variable)
    answer = prometheus(stack, f"/api/v1/label/{label}/values", {"match[]": selector})
    assert answer.get("status") == "success", answer
    if board not in NO_DCGM_HERE:
        assert answer["data"], f"{board}: ${variable['name']} offers no value"


def test_every_dashboard_is_asked(stack):
    assert {q.dashboard for q in QUERIES} == set(BOARDS) and len(BOARDS) == 4


# ---- Grafana itself, when the test deployment runs it ---------------------------------

@pytest.fixture(scope="module")
def grafana(stack):
    containers = engine.project_containers(compose.project_name())
    if "grafana" not in containers or containers["grafana"].status != "running":
        pytest.skip("Grafana does not run in the test deployment: its image is not on this engine "
                    "(services/grafana/README.md, \"Getting the image\")")
    return containers["grafana"]


def browser(stack):
    import ssl

    import httpx
    return httpx.Client(verify=ssl.create_default_context(cafile=str(stack.ca)), timeout=30)


def test_grafana_is_healthy_on_its_database(stack, grafana):
    assert grafana.attrs["State"]["Health"]["Status"] == "healthy"
    with browser(stack) as http:
        health = http.get(stack.url("grafana") + "/api/health")
    assert health.status_code == 200 and health.json()["database"] == "ok", health.text
    from stackenv import connect
    with connect(stack, "grafana") as conn:         # its schema is in its own database
        assert conn.execute("SELECT count(*) FROM migration_log WHERE success").fetchone()[0] > 0


def sign_in(stack, http, username: str):
    """Grafana's "Sign in with Keycloak", as a browser: Keycloak's form, then back."""
    from oidc import submit_login
    page = http.get(stack.url("grafana") + "/login/generic_oauth", follow_redirects=True)
    assert 'id="kc-form-login"' in page.text, f"not sent to Keycloak's sign-in ({page.url})"
    done = submit_login(http, page, username, json.loads(stack.secret("keycloak_users"))[username])
    return http.get(done.headers["location"], follow_redirects=True)


def test_a_monitoring_viewer_signs_in_as_viewer_and_sees_the_dashboards(stack, grafana):
    import kcadmin
    kcadmin.add_to_group(stack, "observer", "monitoring_viewers")
    with browser(stack) as http:
        sign_in(stack, http, "observer")
        me = http.get(stack.url("grafana") + "/api/user")
        assert me.status_code == 200 and me.json()["login"] == "observer", me.text
        orgs = http.get(stack.url("grafana") + "/api/user/orgs").json()
        assert [o["role"] for o in orgs] == ["Viewer"]
        found = http.get(stack.url("grafana") + "/api/search", params={"tag": "federation"}).json()
        assert {d["uid"] for d in found} == {d["uid"] for d in BOARDS.values()}
        # a panel's query through Grafana's data source proxy, as the dashboards run it
        body = {"from": "now-5m", "to": "now", "queries": [
            {"refId": "A", "datasource": gd.DATASOURCE, "expr": 'up{job="prometheus"}', "instant": True}]}
        answer = http.post(stack.url("grafana") + "/api/ds/query", json=body)
        assert answer.status_code == 200, answer.text[:300]
        assert answer.json()["results"]["A"]["frames"], answer.text[:300]

def test_a_user_without_a_grafana_role_is_refused(stack, grafana):
    with browser(stack) as http:
        page = sign_in(stack, http, "researcher")             # superlink_user, jupyter_user only
        assert http.get(stack.url("grafana") + "/api/user").status_code == 401, page.url
