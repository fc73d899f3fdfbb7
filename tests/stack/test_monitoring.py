"""Monitoring (task list 5.2): Prometheus scrapes every target over the monitoring
network, its configuration and alert rules pass promtool inside the running container,
Alertmanager is reached, and the monitoring services run as the hardened services do.

Prometheus' API is asked from inside its own container (it is not published, and the
monitoring network reaches nowhere else)."""
from __future__ import annotations

import json
import time

import pytest
import yaml

from fedops import compose, engine, paths, services

from stackenv import connect
from stackenv import prometheus_api as api
from stackenv import prometheus_query as query

MONITORING = ("prometheus", "alertmanager", "node-exporter", "nginx-exporter", "postgres-exporter",
              "blackbox-exporter", "fl-exporter")
RULES = yaml.safe_load((paths.SERVICES_DIR / "prometheus" / "rules" / "alerts.yml").read_text())
JOBS = {"prometheus", "alertmanager", "node", "nginx", "postgres", "blackbox", "ctlgate", "fl", "edge", "jupyterhub",
        "keycloak"}


@pytest.fixture(scope="module")
def targets(stack) -> list[dict]:
    """Prometheus' active targets once every one has been scraped and is up (DNS service
    discovery and the first scrapes take up to two scrape intervals)."""
    deadline = time.time() + 240
    while True:
        active = api(stack, "http://127.0.0.1:9090/api/v1/targets?state=active")["data"]["activeTargets"]
        jobs = {t["labels"]["job"] for t in active}
        if JOBS <= jobs and all(t["health"] == "up" for t in active):
            return active
        if time.time() > deadline:
            down = {f'{t["labels"]["job"]}/{t["labels"]["instance"]}': (t["health"], t["lastError"])
                    for t in active if t["health"] != "up"}
            raise AssertionError(f"jobs {sorted(jobs)} (wanted {sorted(JOBS)}); not up: {down}")
        time.sleep(5)


def test_every_prometheus_target_is_up(targets):
    by_job = {}
    for t in targets:
        by_job.setdefault(t["labels"]["job"], []).append(t["labels"]["instance"])
    print("\ntargets:", json.dumps(by_job, indent=1, sort_keys=True))
    assert set(by_job) == JOBS          # no dcgm without the gpu profile: absent, not down
    assert by_job["node"] == ["node-exporter"] and by_job["ctlgate"] == ["ctlgate"]


def test_every_public_hostname_is_probed_through_the_edge(stack, targets):
    hosts = stack.rendered()["hostnames"]
    edge = {t["labels"]["public_host"]: t["labels"]["instance"] for t in targets if t["labels"]["job"] == "edge"}
    assert edge == {name: f"https://{host}/" for name, host in hosts.items()}
    success = {r["metric"]["public_host"]: r["value"][1] for r in query(stack, 'probe_success{job="edge"}')}
    assert success == {name: "1" for name in hosts}, "a public host failed its TLS handshake or answer"
    # the certificate's expiry is seen, and is far (invoke ca.renew keeps it so)
    days = query(stack, '(probe_ssl_earliest_cert_expiry{job="edge"} - time()) / 86400')
    assert len(days) == len(hosts) and all(float(r["value"][1]) > 14 for r in days)
    status = {r["metric"]["public_host"]: int(r["value"][1])
              for r in query(stack, 'probe_http_status_code{job="edge"}')}
    assert status["landing"] == 200
    print("\nedge answers:", status)


def test_exporters_read_their_sources(stack, targets):
    assert [r["value"][1] for r in query(stack, "pg_up")] == ["1"]          # monitoring role over TLS
    assert [r["value"][1] for r in query(stack, "nginx_up")] == ["1"]       # stub_status
    assert query(stack, "node_load15"), "the node exporter reads the host's /proc"
    assert query(stack, 'node_filesystem_size_bytes{mountpoint="/"}'), "the host's root file system"


def test_the_monitoring_role_reads_statistics_only(stack):
    import psycopg
    # The administration port passes TCP through the edge, which is on the monitoring
    # network too: there the role reaches the postgres database (pg_monitor) and no other.
    with connect(stack, "monitoring", db="postgres") as conn:
        row = conn.execute("SELECT rolsuper, rolcreaterole, rolcreatedb, pg_has_role('pg_monitor', 'member'), "
                           "(SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) "
                           "FROM pg_roles WHERE rolname = current_user").fetchone()
        assert row == (False, False, False, True, True)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE monitoring_was_here (x int)")
    with pytest.raises(psycopg.OperationalError, match="pg_hba.conf rejects connection"):
        connect(stack, "monitoring", db="keycloak")


def test_alert_rules_load_and_are_healthy(stack, targets):
    groups = api(stack, "http://127.0.0.1:9090/api/v1/rules?type=alert")["data"]["groups"]
    loaded = {r["name"]: r["health"] for g in groups for r in g["rules"]}
    wanted = {r["alert"] for g in RULES["groups"] for r in g["rules"]}
    assert set(loaded) == wanted
    assert set(loaded.values()) == {"ok"}


def test_prometheus_reaches_alertmanager(stack, targets):
    ams = api(stack, "http://127.0.0.1:9090/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
    assert [a["url"].split("/")[2].split(":")[1] for a in ams] == ["9093"]
    status = api(stack, "http://alertmanager:9093/api/v2/status")
    assert status["cluster"]["status"] == "disabled"          # one instance, no gossip
    assert "severity" in status["config"]["original"]


def test_promtool_and_amtool_pass_inside_the_running_containers(stack):
    check = stack.exec("prometheus", "promtool check config /tmp/prometheus/prometheus.yml")
    assert "SUCCESS" in check.stdout
    rules = stack.exec("prometheus", "promtool test rules /usr/local/share/fl-prometheus/rules-tests/alerts_test.yml")
    assert "SUCCESS" in rules.stdout
    am = stack.exec("alertmanager", "amtool check-config /tmp/alertmanager/alertmanager.yml")
    assert "SUCCESS" in am.stdout


def test_monitoring_services_are_hardened_and_on_the_monitoring_network_only(stack):
    containers = engine.project_containers(compose.project_name())
    project = compose.project_name()
    for name in MONITORING:
        attrs = containers[name].attrs
        uid = str(services.by_name(name).uid)
        assert attrs["Config"]["User"] == f"{uid}:{uid}", name
        assert attrs["HostConfig"]["ReadonlyRootfs"] is True, name
        assert attrs["HostConfig"]["CapDrop"] == ["ALL"], name
        assert list(attrs["NetworkSettings"]["Networks"]) == [f"{project}_fl-monitoring-network"], name
        assert attrs["Config"]["Labels"]["fl.phase"] == "5.2 monitoring", name
        assert attrs["State"]["Health"]["Status"] == "healthy", name
    mounts = {m["Destination"]: m for m in containers["node-exporter"].attrs["Mounts"]}
    assert all(mounts[p]["RW"] is False for p in ("/host/proc", "/host/sys", "/host/root"))
    data = {m["Destination"]: m["Type"] for m in containers["prometheus"].attrs["Mounts"]}
    assert data["/prometheus"] == "volume"
    data = {m["Destination"]: m["Type"] for m in containers["alertmanager"].attrs["Mounts"]}
    assert data["/alertmanager"] == "volume"


# ---- the monitoring UIs through the edge, behind Keycloak sign-on ----------------------

UIS = {"prometheus": "/api/v1/status/buildinfo", "alertmanager": "/api/v2/status"}


def browser(stack):
    import ssl

    import httpx
    return httpx.Client(verify=ssl.create_default_context(cafile=str(stack.ca)), timeout=30)


def sign_in(stack, http, name: str, username: str):
    """Open a monitoring UI as a browser would: to Keycloak's login form, sign in, back."""
    from oidc import submit_login
    page = http.get(stack.url(name) + "/", follow_redirects=True)
    assert 'id="kc-form-login"' in page.text, f"{name}: not sent to Keycloak's sign-in ({page.url})"
    done = submit_login(http, page, username, json.loads(stack.secret("keycloak_users"))[username])
    assert done.status_code in (302, 303), f"sign-in did not redirect: {done.status_code} {done.text[:300]}"
    return http.get(done.headers["location"], follow_redirects=True)


@pytest.fixture(scope="module")
def viewer(stack) -> str:
    """A user with the realm role monitoring_viewer (through group monitoring_viewers)."""
    import kcadmin
    return kcadmin.add_to_group(stack, "observer", "monitoring_viewers")


@pytest.mark.parametrize("name", UIS)
def test_the_monitoring_uis_refuse_unauthenticated_requests(stack, name):
    with browser(stack) as http:
        for path in ("/", UIS[name]):
            r = http.get(stack.url(name) + path)
            assert r.status_code == 302, (name, path, r.status_code, r.text[:200])
            assert r.headers["location"].startswith(stack.url(name) + "/oauth2/start?rd="), r.headers["location"]
        # a made-up session cookie is no session
        r = http.get(stack.url(name) + UIS[name], cookies={"_fl_monitoring": "forged"})
        assert r.status_code == 302


def test_a_signed_in_user_with_the_role_is_served(stack, viewer):
    with browser(stack) as http:
        page = sign_in(stack, http, "prometheus", viewer)
        assert page.status_code == 200 and "Prometheus" in page.text, page.text[:300]
        build = http.get(stack.url("prometheus") + UIS["prometheus"])
        assert build.status_code == 200 and build.json()["status"] == "success"
        # Alertmanager: the Keycloak session signs the user in without the form again
        am = http.get(stack.url("alertmanager") + UIS["alertmanager"], follow_redirects=True)
        assert am.status_code == 200 and am.json()["cluster"]["status"] == "disabled", am.text[:300]
        # the administration endpoints stay closed, signed in or not
        assert http.post(stack.url("prometheus") + "/-/quit").status_code == 404
        assert http.post(stack.url("prometheus") + "/api/v1/admin/tsdb/snapshot").status_code == 404


def test_a_signed_in_user_without_the_role_is_refused(stack):
    with browser(stack) as http:
        page = sign_in(stack, http, "prometheus", "researcher")     # superlink_user only
        assert page.status_code == 403, (page.status_code, page.text[:300])
        r = http.get(stack.url("prometheus") + UIS["prometheus"])
        assert r.status_code == 302


# ---- Keycloak's metrics: brute-force lockouts counted and alerted -----------------------

LOCKOUT = "user_disabled_by_temporary_lockout"


@pytest.fixture
def lockout_user(stack):
    """A throwaway realm user (a random password nobody uses), deleted after the test
    with its brute-force record; and the realm's failures before a lockout."""
    import secrets

    import kcadmin
    username = "lockout-probe"
    with kcadmin.admin_client(stack) as admin:
        kcadmin.create_user(admin, username, secrets.token_urlsafe(24))
        failures = admin.get("").json()["failureFactor"]
    yield username, failures
    with kcadmin.admin_client(stack) as admin:
        kcadmin.delete_user(admin, username)


def lockouts(stack) -> float:
    found = query(stack, f'sum(keycloak_user_events_total{{realm="flowerfl",event="{LOCKOUT}"}})')
    return float(found[0]["value"][1]) if found else 0.0


def test_a_brute_force_lockout_is_counted_and_alerted(stack, targets, lockout_user):
    """Keycloak's user-event metrics reach Prometheus through the edge (job keycloak),
    and repeated wrong passwords at the sign-in form fire KeycloakBruteForceLockout."""
    from oidc import submit_login

    from stackenv import alertmanager_alerts, wait_for
    username, failures = lockout_user
    assert query(stack, 'up{job="keycloak"}')[0]["value"][1] == "1"
    assert query(stack, 'keycloak_user_events_total{realm="flowerfl",event="login"}'), \
        "no sign-in counted: the suite's earlier sign-ins should show"
    before = lockouts(stack)
    with browser(stack) as http:
        page = http.get(stack.url("prometheus") + "/", follow_redirects=True)
        for attempt in range(failures):
            page = submit_login(http, page, username, f"wrong-{attempt}")
            assert page.status_code == 200 and 'id="kc-form-login"' in page.text, \
                f"attempt {attempt + 1}: {page.status_code} {page.text[:300]}"
    took, after = wait_for(
        f"{LOCKOUT} counted in Prometheus", 90, lambda: lockouts(stack) > before and lockouts(stack),
        lambda: f"{query(stack, 'keycloak_user_events_total')}")
    print(f"\nlockout of {username} after {failures} wrong passwords: in Prometheus after {took:.0f} s "
          f"({before:.0f} -> {after:.0f})")
    took, alerts = wait_for(
        "KeycloakBruteForceLockout active in Alertmanager", 120,
        lambda: [a for a in alertmanager_alerts(stack, alertname="KeycloakBruteForceLockout")
                 if a["status"]["state"] == "active"],
        lambda: f"Prometheus ALERTS {query(stack, 'ALERTS')}")
    print(f"  KeycloakBruteForceLockout active in Alertmanager {took:.0f} s later")
    assert alerts[0]["labels"]["realm"] == "flowerfl" and alerts[0]["labels"]["event"] == LOCKOUT
    assert alerts[0]["labels"]["severity"] == "warning"


# ---- the federation as metrics (services/fl-exporter) and the read-only account ----------

def service_account_token(stack) -> str:

    from oidc import realm_url
    with browser(stack) as http:
        r = http.post(f"{realm_url(stack)}/protocol/openid-connect/token", data={"grant_type": "client_credentials"},
                      auth=("fl-exporter", stack.secret("oidc_fl_exporter_secret")))
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def control_call(stack, http, token: str, method: str, message):
    return http.post(f"{stack.url('control')}/v1/control/{method}", content=message.SerializeToString(),
                     headers={"Content-Type": "application/protobuf", "Accept": "application/protobuf",
                              "Authorization": f"Bearer {token}"})


def test_the_read_only_account_lists_and_reads_but_may_not_start_or_stop_runs(stack):
    from flwr.proto.control_pb2 import (ListNodesRequest, ListNodesResponse, ListRunsRequest,
                                        StartRunRequest, StopRunRequest)
    token = service_account_token(stack)
    with browser(stack) as http:
        assert control_call(stack, http, token, "list-runs", ListRunsRequest()).status_code == 200
        nodes = control_call(stack, http, token, "list-nodes", ListNodesRequest())
        assert nodes.status_code == 200
        listed = ListNodesResponse()
        listed.ParseFromString(nodes.content)
        assert {n.name for n in listed.nodes_info} >= {o.name for o in stack.fed.organisations}
        for method, message in (("start-run", StartRunRequest()), ("stop-run", StopRunRequest(run_id=1))):
            refused = control_call(stack, http, token, method, message)
            assert refused.status_code == 403, (method, refused.status_code, refused.text[:200])


def test_the_federation_is_in_prometheus_after_a_run(stack, targets):
    from stackenv import completed_run, wait_all_online
    wait_all_online(stack)
    run_id = completed_run()
    deadline = time.time() + 120
    while True:
        online = {r["metric"]["organisation"]: r["value"][1] for r in query(stack, "fl_supernodes_online")}
        # the run as the last scrape saw it (every 30 s): wait for its final status
        runs = query(stack, f'fl_run_status{{run_id="{run_id}",status="finished:completed"}}')
        if online == {o.name: "1" for o in stack.fed.organisations} and runs:
            break
        assert time.time() < deadline, f"FL metrics: online {online}, run {run_id}: {runs}"
        time.sleep(5)
    assert runs[0]["metric"]["status"] == "finished:completed"
    assert float(query(stack, f'fl_run_duration_seconds{{run_id="{run_id}"}}')[0]["value"][1]) > 0
    assert query(stack, 'fl_runs{status="finished:completed"}')
    assert float(query(stack, "fl_exporter_last_success_timestamp_seconds")[0]["value"][1]) > 0
