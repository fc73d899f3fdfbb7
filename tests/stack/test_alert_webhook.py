"""An alert reaches a webhook: one organisation's SuperNode of the TEST deployment is
stopped, SuperNodeOffline fires in Alertmanager within its rule's window and is POSTed to
a webhook receiver; started again, the alert resolves and the receiver gets the resolved
notification.

The receiver is a small HTTP server in a container of the test's own, on the test
deployment's monitoring network, from an image the project builds (the FL exporter's,
which has python3); it is removed afterwards. The test deployment's Alertmanager is
pointed at it the way an operator configures receivers: FL_ALERT_WEBHOOK_URL (and
shorter notification timings) in the instance's .env.local, then `./invoke up`; both are
put back afterwards."""
from __future__ import annotations

import json
import time

import pytest

from fedops import compose, engine, paths

from stackenv import alertmanager_alerts, online_by_org, prometheus_api, wait_all_online, wait_for

PORT = 8080
# Prints each POST's body as one line on stdout (the test reads the container's log).
RECEIVER = f"""
import http.server, sys
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        sys.stdout.write(body.decode().replace("\\n", " ") + "\\n")
        sys.stdout.flush()
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("", {PORT}), Hook).serve_forever()
"""
# The rule (services/prometheus/rules/alerts.yml): SuperNodeOffline, for 2m. Before it
# can be pending: the SuperLink sees the node go (its heartbeat, up to ~60 s after an
# unclean stop) and the exporter's next scrape (30 s); then the 2 minutes, a rule
# evaluation (30 s) and Alertmanager's group_wait.
FIRE_WITHIN = 60 + 30 + 120 + 30 + 5 + 75           # 75 s of slack on a busy 2-core machine
RESOLVE_WITHIN = 90 + 30 + 30 + 10 + 60
SETTINGS = {"FL_ALERT_GROUP_WAIT": "5s", "FL_ALERT_GROUP_INTERVAL": "10s"}


@pytest.fixture(scope="module")
def receiver(stack):
    """The webhook receiver on the monitoring network; the Alertmanager pointed at it."""
    project = compose.project_name()
    image = engine.project_containers(project)["fl-exporter"].attrs["Config"]["Image"]
    name = f"{project}-alert-receiver"
    client = engine.client()
    for old in client.containers.list(all=True, filters={"name": f"^/{name}$"}):
        old.remove(force=True)
    ctr = client.containers.run(
        image, ["-c", RECEIVER], entrypoint=["python3"], name=name, detach=True,
        network=f"{project}_fl-monitoring-network", read_only=True, cap_drop=["ALL"],
        security_opt=["no-new-privileges"], mem_limit="64m", healthcheck={"test": ["NONE"]},
        # the project's label: a session interrupted before the teardown removes it with
        # the rest of its test deployment (tests/support/testinstance.py)
        labels={"com.docker.compose.project": project})
    env_local = paths.LOCAL_ENV
    original = env_local.read_text()
    try:
        env_local.write_text(original + "# test_alert_webhook.py (put back afterwards)\n"
                             + f"FL_ALERT_WEBHOOK_URL=http://{name}:{PORT}/alerts\n"
                             + "".join(f"{k}={v}\n" for k, v in SETTINGS.items()))
        stack.invoke("up")
        # Alertmanager's API shows webhook URLs as <secret>: its rendered file names it
        config = stack.exec("alertmanager", "cat /tmp/alertmanager/alertmanager.yml").stdout
        assert f"http://{name}:{PORT}/alerts" in config and "group_interval: 10s" in config, config
        loaded = prometheus_api(stack, "http://alertmanager:9093/api/v2/status")["config"]["original"]
        assert "group_interval: 10s" in loaded and "send_resolved: true" in loaded, loaded
        yield ctr
    finally:
        env_local.write_text(original)
        try:
            stack.invoke("up")
        finally:
            ctr.remove(force=True)


def notifications(ctr) -> list[dict]:
    """Every webhook POST the receiver got, parsed."""
    return [json.loads(line) for line in ctr.logs(stdout=True, stderr=False).decode().splitlines()
            if line.startswith("{")]


def notified(ctr, org: str, status: str, starts_at: str | None = None) -> list[dict]:
    """The receiver's SuperNodeOffline alerts of `org` in state `status`; with
    `starts_at`, only that instance of the alert (an earlier one of the same labels,
    resolved before this test, may still be notified: Alertmanager's notification log
    outlives its restarts)."""
    return [a for n in notifications(ctr) for a in n.get("alerts", [])
            if a["labels"].get("alertname") == "SuperNodeOffline"
            and a["labels"].get("organisation") == org and a["status"] == status
            and (starts_at is None or same_time(a["startsAt"], starts_at))]


def same_time(a: str, b: str) -> bool:
    """Alertmanager writes one time with milliseconds in its API and with Go's trimmed
    fractions in notifications: compare them to the millisecond."""
    def ms(text: str) -> tuple[str, int]:
        base, _, frac = text.rstrip("Z").partition(".")
        return base, int((frac + "000")[:3])
    return ms(a) == ms(b)


def offline_alerts(stack, org: str) -> list[dict]:
    return alertmanager_alerts(stack, alertname="SuperNodeOffline", organisation=org)


def test_a_stopped_supernode_fires_at_the_webhook_and_resolves(stack, receiver):
    wait_all_online(stack)
    org = stack.fed.organisations[-1].name
    service = f"supernode-{org}"
    # The container itself, not `docker compose stop/start`: compose's start would first
    # wait on the site's dependencies' health (the SuperLink's), which is not under test.
    supernode = engine.project_containers(compose.project_name())[service]
    supernode.stop(timeout=10)
    stopped = time.time()
    try:
        took, alerts = wait_for(
            f"SuperNodeOffline for {org} firing in Alertmanager", FIRE_WITHIN,
            lambda: [a for a in offline_alerts(stack, org) if a["status"]["state"] == "active"],
            lambda: f"SuperNodes {online_by_org()}, Alertmanager {offline_alerts(stack, org)}")
        print(f"\n{service} stopped: SuperNodeOffline active in Alertmanager after {took:.0f} s")
        assert alerts[0]["labels"]["severity"] == "critical"
        starts_at = alerts[0]["startsAt"]       # this instance of the alert
        took, posted = wait_for(
            "the firing SuperNodeOffline POSTed to the webhook receiver", 60,
            lambda: notified(receiver, org, "firing", starts_at),
            lambda: f"the receiver got {notifications(receiver)}")
        print(f"  POSTed to the receiver {time.time() - stopped:.0f} s after the stop")
    finally:
        supernode.start()
    started = time.time()
    wait_all_online(stack, timeout=240)
    took, resolved = wait_for(
        "the resolved SuperNodeOffline POSTed to the webhook receiver", RESOLVE_WITHIN,
        lambda: notified(receiver, org, "resolved", starts_at),
        lambda: f"SuperNodes {online_by_org()}, Alertmanager {offline_alerts(stack, org)}, "
                f"the receiver got {notifications(receiver)}")
    print(f"  {service} started again: resolved notification {time.time() - started:.0f} s later")
    assert resolved[0]["endsAt"] > resolved[0]["startsAt"]
    assert not [a for a in offline_alerts(stack, org) if a["status"]["state"] == "active"]
