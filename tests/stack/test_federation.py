"""The federated core (task list 4, 7.1, 7.2): SuperLink and one SuperNode site per
organisation, behind the edge's mTLS fleet host; runs as a user starts them; refusals;
restarts. Tests that disturb the federation (revocation, restarts) run last, in order."""
from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edge import client
from stackenv import completed_run, online_by_org, utc_now, wait_all_online
from fedops import federation, paths, secrets
from fedops import stack as stack_ops
from testcerts import make_ca, make_leaf, pem_cert, pem_key

ROUND_ROW = re.compile(r"^\s*(\d+)\s+([0-9.]+)\s+([0-9.]+)\s*$", re.M)


# ---------------------------------------------------------------- helpers
def fleet_url(stack, method: str = "send-node-heartbeat") -> str:
    return f"{stack.url('fleet')}/v1/fleet/{method}"


def fleet_post(stack, cert: tuple[str, str] | None = None, headers: dict | None = None) -> httpx.Response:
    with client(stack, cert) as http:
        return http.post(fleet_url(stack), content=b"", headers=headers or {})


def wait_for_log(stack, service: str, since: str, pattern: str, timeout: float = 20) -> str:
    """The first log line of `service` since `since` that matches the regex."""
    deadline = time.time() + timeout
    while True:
        for line in stack.logs(service, since=since).splitlines():
            if re.search(pattern, line):
                return line
        if time.time() > deadline:
            raise AssertionError(f"no {service} log line matching {pattern!r} since {since}:\n"
                                 f"{stack.logs(service, since=since)[-3000:]}")
        time.sleep(1)


def cert_files(tmp: Path, name: str, leaf) -> tuple[str, str]:
    """A (key, certificate) pair written as PEM files: (certificate path, key path)."""
    crt, key = tmp / f"{name}.crt", tmp / f"{name}.key"
    crt.write_bytes(pem_cert(leaf[1]))
    key.write_bytes(pem_key(leaf[0]))
    return str(crt), str(key)


def project_ca():
    """The project CA's key and certificate: the operator's test may sign with it (it is
    how an expired certificate from the right CA is made without waiting a year)."""
    key = serialization.load_pem_private_key((paths.PKI_DIR / "private" / "ca.key").read_bytes(), None)
    return key, x509.load_pem_x509_certificate((paths.PKI_DIR / "ca.crt").read_bytes())


def org_cert(org: str) -> tuple[str, str]:
    folder = paths.DEPLOY_DIR / f"org-{org}"
    return str(folder / "tls.crt"), str(folder / "tls.key")


def container_id(stack, service: str) -> str:
    return stack.compose("ps", "-q", service).stdout.strip()


def round_table(output: str) -> dict[int, tuple[float, float]]:
    """`invoke fl.run` ends with `round accuracy loss` rows."""
    table = output.split("round ", 1)[-1]
    return {int(r): (float(a), float(l)) for r, a, l in ROUND_ROW.findall(table)}


# ---------------------------------------------------------------- the federation is up
def test_every_service_is_healthy(stack):
    """Docker's own healthchecks (at their interval) agree with `invoke up`'s probes."""
    expected = {"postgres", "keycloak", "ctlgate", "nginx", "superlink"}
    for org in stack.fed.organisations:
        expected |= {f"supernode-{org.name}", f"siteproxy-{org.name}"}
    deadline = time.time() + 90
    while True:
        rows = stack.compose("ps", "--all", "--format", "{{.Service}} {{.State}} {{.Health}}").stdout.split("\n")
        states = {r.split()[0]: r.split()[1:] for r in rows if r.strip()}
        assert expected <= set(states), f"missing: {expected - set(states)}"
        unhealthy = {s: v for s, v in states.items() if v != ["running", "healthy"]}
        if not unhealthy:
            return
        assert time.time() < deadline, unhealthy
        time.sleep(2)


def test_every_organisation_is_registered_and_online(stack):
    nodes = federation.nodes()
    by_name = {n.name: n for n in nodes}
    for org in stack.fed.organisations:
        assert org.name in by_name, f"{org.name}'s SuperNode key is not registered: {nodes}"
    wait_all_online(stack, timeout=60)


def test_registration_is_idempotent(stack):
    out = stack.invoke("fl.register").stdout
    for org in stack.fed.organisations:
        assert f"{org.name} already" in out


def test_superlink_apis_are_not_published(stack):
    """Fleet, Control and Runtime only inside the services network: no published port
    (the edge is the way in); nor is a site proxy's loopback listener."""
    for service in ["superlink"] + [f"siteproxy-{o.name}" for o in stack.fed.organisations]:
        published = subprocess.run(["docker", "port", container_id(stack, service)],
                                    capture_output=True, text=True, check=True).stdout
        assert published.strip() == "", f"{service} publishes {published}"


# ---------------------------------------------------------------- a real run
def test_three_round_run_completes_with_rising_accuracy(stack):
    proc = stack.invoke("fl.run", "--rounds", "3", "--quiet", check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "finished:completed" in proc.stdout
    rounds = round_table(proc.stdout)
    assert sorted(rounds) == [1, 2, 3], proc.stdout[-2000:]
    accuracy = [rounds[r][0] for r in (1, 2, 3)]
    loss = [rounds[r][1] for r in (1, 2, 3)]
    assert accuracy[2] > accuracy[0] and accuracy[2] >= accuracy[1] - 0.01, accuracy
    assert loss[2] < loss[0], loss
    assert accuracy[2] > 0.8   # 10 classes: chance is 0.1
    run_id = re.search(r"run (\d+) started", proc.stdout).group(1)
    assert run_id in {r["run-id"] for r in federation.runs()}


def container_processes(stack, service: str) -> list[tuple[int, int, str, str]]:
    """(pid, parent pid, state, command line) of each process in the service's container."""
    out = subprocess.run(["docker", "top", container_id(stack, service), "-o", "pid,ppid,stat,args"],
                         capture_output=True, text=True, check=True).stdout.splitlines()[1:]
    rows = [line.split(None, 3) for line in out if line.strip()]
    return [(int(pid), int(ppid), stat, args) for pid, ppid, stat, args in rows]


def test_clientapps_are_started_by_the_warm_launcher_beside_each_supernode(stack):
    """Each SuperNode container's main process is the launcher (services/supernode/
    launcher.py), flower-supernode runs as its child with --isolation process, the run's
    ClientApps ran (flwr's line, printed in the forked children) without a failed exit,
    and none is left behind as a zombie."""
    since = utc_now()
    row = federation.wait_finished(federation.submit("digits", 1))
    assert row["status"] == "finished:completed", row
    for org in stack.fed.organisations:
        service = f"supernode-{org.name}"
        procs = container_processes(stack, service)
        init = [p for p in procs if p[3].startswith("/sbin/docker-init")]
        mains = [p for p in procs if init and p[1] == init[0][0]]
        assert len(mains) == 1 and mains[0][3] == "python3 /usr/local/bin/entrypoint.py", procs
        supernodes = [p for p in procs if "flower-supernode" in p[3]]
        assert len(supernodes) == 1 and supernodes[0][1] == mains[0][0], procs
        assert "--isolation process" in supernodes[0][3]
        assert not any("flower-superexec" in p[3] or "flwr-clientapp" in p[3] for p in procs), procs
        assert not [p for p in procs if p[2].startswith("Z")], f"zombies in {service}: {procs}"
        assert "ClientApps are forked from pid" in stack.logs(service)
        logs = stack.logs(service, since=since)
        assert logs.count("Start `flwr-clientapp` process") >= 2, logs[-3000:]   # train, evaluate
        assert "exited with" not in logs, logs[-3000:]


def test_fl_status_names_every_organisation(stack):
    completed_run()
    out = stack.invoke("fl.status").stdout
    for org in stack.fed.organisations:
        assert re.search(rf"^\s+{org.name}\s+\d+\s+online", out, re.M), out
    assert "finished:completed" in out


def test_fl_run_refuses_an_unknown_app(stack):
    proc = stack.invoke("fl.run", "--app", "no-such-app", check=False)
    assert proc.returncode != 0
    assert "no Flower app in apps/no-such-app" in proc.stdout + proc.stderr
    assert "digits" in proc.stdout + proc.stderr   # says what exists


# ---------------------------------------------------------------- the edge admits organisations only
def test_an_organisation_certificate_is_admitted_and_logged_with_its_organisation(stack):
    since = utc_now()
    canary = f"SIGNATURE-CANARY-{time.time_ns()}"
    r = fleet_post(stack, org_cert("bravo"),
                   headers={"flwr-signature": canary, "flwr-public-key": canary, "flwr-timestamp": canary})
    # Past the edge: the SuperLink itself answers (it refuses the bogus signature).
    assert r.status_code not in (400, 403, 404, 502), r.text
    bravo = stack.fed.organisation("bravo").display_name
    line = wait_for_log(stack, "nginx", since, r"send-node-heartbeat.*ssl_client_verify=SUCCESS")
    assert bravo in line and "upstream_status=" in line
    # Both hops have logged this request (a positive signal) before their logs are read:
    # neither holds the canary.
    wait_for_log(stack, "superlink", since, r"POST /v1/fleet/send-node-heartbeat")
    for service in ("nginx", "superlink"):
        assert canary not in stack.logs(service, since=since), f"{service} logged a flwr-* header"


def test_the_fleet_host_serves_fleet_calls_only(stack):
    with client(stack, org_cert("charlie")) as http:
        base = f"{stack.url('fleet')}"
        assert http.get(f"{base}/v1/fleet/pull-messages").status_code == 405
        for path in ("/v1/control/list-runs", "/v1/runtime/acquire-task", "/docs", "/health",
                     "/v1/fleet/../control/list-runs", "/v1/fleet/pull-messages?x=1"):
            r = http.post(f"{base}{path}", content=b"")
            assert r.status_code == 404 and r.text == '{"detail":"Not Found"}\n', path


def test_a_model_update_of_hundreds_of_megabytes_passes_the_edge(stack):
    """300 MB through fleet.<domain> to the SuperLink, streamed (no 413, no timeout): the
    SuperLink itself answers (it cannot parse the zeros as a push-object request)."""
    size = 300 * 2**20
    chunk = bytes(2**20)
    since = utc_now()
    with client(stack, org_cert("charlie")) as http:
        http.timeout = httpx.Timeout(120)
        r = http.post(fleet_url(stack, "push-object"), content=(chunk for _ in range(size // len(chunk))),
                      headers={"Content-Type": "application/protobuf"})
    assert r.status_code not in (413, 502, 504), (r.status_code, r.text[:300])
    # the SuperLink answered (an upstream status), not the edge
    wait_for_log(stack, "nginx", since,
                 r"POST /v1/fleet/push-object .*ssl_client_verify=SUCCESS .*upstream_status=\d{3}")


def test_no_client_certificate_is_refused(stack):
    since = utc_now()
    r = fleet_post(stack)
    assert r.status_code == 400 and "No required SSL certificate" in r.text
    wait_for_log(stack, "nginx", since, r"fleet\..*send-node-heartbeat.* 400 .*ssl_client_verify=NONE")


def test_a_certificate_from_another_ca_is_refused(stack, tmp_path):
    since = utc_now()
    r = fleet_post(stack, cert_files(tmp_path, "impostor", make_leaf(make_ca("Some Other CA"), "impostor")))
    assert r.status_code == 400 and "SSL certificate error" in r.text
    wait_for_log(stack, "nginx", since, r"400 .*ssl_client_verify=FAILED:unable to (get local issuer|verify).*CN=impostor")


def test_an_expired_certificate_is_refused(stack, tmp_path):
    since = utc_now()
    r = fleet_post(stack, cert_files(tmp_path, "expired-site", make_leaf(project_ca(), "expired-site", expired=True)))
    assert r.status_code == 400 and "SSL certificate error" in r.text
    wait_for_log(stack, "nginx", since, r"400 .*ssl_client_verify=FAILED:certificate has expired.*CN=expired-site")


def test_a_supernode_whose_key_was_never_registered_is_refused(stack, tmp_path):
    """A SuperNode at a real site (alpha's proxy, a valid organisation certificate) with a
    key nobody registered: the SuperLink refuses to activate it and it exits."""
    key = tmp_path / "unregistered_key"
    key.write_bytes(secrets.new_supernode_key("never-registered")[0])
    key.chmod(0o444)
    proxy = container_id(stack, "siteproxy-alpha")
    image = subprocess.run(["docker", "inspect", "--format", "{{.Config.Image}}", container_id(stack, "supernode-alpha")],
                           capture_output=True, text=True, check=True).stdout.strip()
    since = utc_now()
    proc = subprocess.run(
        ["docker", "run", "--rm", "--network", f"container:{proxy}", "--user", "10050:10050", "--read-only",
         "--tmpfs", "/tmp:uid=10050,gid=10050,mode=0700", "-v", f"{key}:/etc/fl/site/supernode_key:ro",
         "-v", f"{paths.DEPLOY_DIR / 'org-alpha' / 'ca.crt'}:/etc/fl/tls/ca.crt:ro",
         "-e", "PARTITION_ID=0", "-e", "NUM_PARTITIONS=3", "-e", "SUPERNODE_RUNTIME_PORT=9194",
         "-e", "SUPERNODE_HEALTH_ADDRESS=", image],
        capture_output=True, text=True, timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-2000:]
    assert "Failed to activate SuperNode" in out or "2004" in out, out[-2000:]
    wait_for_log(stack, "superlink", since, r"No SuperNode found with the given public key")


# ---------------------------------------------------------------- revocation (changes the CA: reinstated after)
def test_revoking_an_organisation_cuts_it_off_and_reinstating_restores_it(stack, tmp_path):
    old_cert = tuple(str(shutil.copy(f, tmp_path / f"old-{Path(f).name}")) for f in org_cert("alpha"))
    old_serial = x509.load_pem_x509_certificate(Path(old_cert[0]).read_bytes()).serial_number
    assert fleet_post(stack, old_cert).status_code not in (400, 403)
    try:
        since = utc_now()
        out = stack.invoke("ca.revoke", "alpha").stdout
        assert "revoked org-alpha" in out and "edge reloaded" in out
        r = fleet_post(stack, old_cert)
        assert r.status_code == 400 and "SSL certificate error" in r.text
        wait_for_log(stack, "nginx", since, r"ssl_client_verify=FAILED:certificate revoked")
        # alpha's own SuperNode loses the SuperLink (its proxy's new connections fail).
        deadline = time.time() + 240
        while online_by_org().get("alpha") == "online":
            assert time.time() < deadline, "alpha's SuperNode is still online after revocation"
            time.sleep(5)
        assert re.search(r"^org-alpha\s+REVOKED", stack.invoke("ca.status").stdout, re.M)
    finally:
        stack.invoke("ca.reinstate", "alpha")
        up = stack.invoke("up", "--no-build", check=False)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-2000:]
    assert "reloading siteproxy-alpha" in up.stdout
    new_cert = org_cert("alpha")
    assert x509.load_pem_x509_certificate(Path(new_cert[0]).read_bytes()).serial_number != old_serial
    assert fleet_post(stack, new_cert).status_code not in (400, 403)
    assert fleet_post(stack, old_cert).status_code == 400   # the old one stays revoked
    wait_all_online(stack)


# ---------------------------------------------------------------- restarts
def test_superlink_restart_keeps_runs_and_nodes_reconnect(stack):
    completed_run()
    before = {r["run-id"] for r in federation.runs()}
    stack.compose("restart", "superlink")
    stack_ops.wait_healthy(["superlink"])
    assert before <= {r["run-id"] for r in federation.runs()}
    wait_all_online(stack)


def test_a_supernode_killed_during_a_run_is_restarted_and_the_next_run_completes(stack):
    ctr = container_id(stack, "supernode-bravo")
    restarts = int(subprocess.run(["docker", "inspect", "--format", "{{.RestartCount}}", ctr],
                                  capture_output=True, text=True, check=True).stdout)
    run_id = federation.submit("digits", 3)
    deadline = time.time() + 120
    while federation.run_status(run_id)["status"] != "running":
        assert time.time() < deadline, "the run did not start"
        time.sleep(1)
    time.sleep(5)
    # A crash, not a stop: SIGKILL to the flower-supernode process (PID 1 is the init),
    # found the way the image's own healthcheck finds it.
    kill = ("import os, signal, sys; sys.path.insert(0, '/usr/local/bin'); import entrypoint\n"
            "for pid in entrypoint.supernode_pids(): os.kill(pid, signal.SIGKILL)")
    # The container's main process (the launcher) exits with the SuperNode, and Docker may
    # end this exec session with it (137) before it returns: both are fine; the restart count below is the proof.
    killed = stack.compose("exec", "-T", "supernode-bravo", "python3", "-c", kill, check=False)
    assert killed.returncode in (0, 137), killed.stderr
    deadline = time.time() + 120
    while int(subprocess.run(["docker", "inspect", "--format", "{{.RestartCount}}", ctr],
                             capture_output=True, text=True).stdout or 0) <= restarts:
        assert time.time() < deadline, "supernode-bravo was not restarted by its restart policy"
        time.sleep(2)
    stack_ops.wait_healthy(["supernode-bravo"])
    interrupted = federation.wait_finished(run_id, timeout=300)
    if not interrupted["status"].startswith("finished"):
        federation.stop(run_id)
    wait_all_online(stack)
    next_run = federation.submit("digits", 1)
    row = federation.wait_finished(next_run)
    assert row["status"] == "finished:completed", row


# ---------------------------------------------------------------- a new organisation (last: recreates the sites)
def test_an_organisation_added_to_the_config_joins_with_invoke_up_and_can_be_offboarded(stack):
    """Add an organisation in federation.local.yaml, `invoke up`: certificate, SuperNode
    key, registration and site follow, and it takes part in a run. Then the offboarding
    procedure: out of the config, `invoke up`, `ca.revoke`, `fl.unregister`."""
    from stackenv import local_config
    name = f"new{int(time.time()) % 100000}"   # unique: a revoked name is never re-issued

    def add(data: dict) -> None:
        data["organisations"] = [{"name": o.name, "display_name": o.display_name} for o in stack.fed.organisations
                                 ] + [{"name": name, "display_name": "New Test Clinic"}]

    with local_config(stack, add) as cfg:
        assert f"org-{name} issued" in cfg.up and f"{name} registered" in cfg.up
        assert f"supernode-{name}" in cfg.up and f"siteproxy-{name}" in cfg.up
        assert (paths.SECRETS_DIR / "supernodes" / f"{name}.key").exists()
        assert (paths.DEPLOY_DIR / f"org-{name}" / "tls.crt").exists()
        deadline = time.time() + 240
        while online_by_org().get(name) != "online":
            assert time.time() < deadline, f"{name}'s SuperNode did not come online: {online_by_org()}"
            time.sleep(5)
        wait_all_online(stack)
        row = federation.wait_finished(federation.submit("digits", 1))
        assert row["status"] == "finished:completed", row
        log = federation.admin(["log", row["run-id"], federation.ADMIN_CONNECTION], timeout=60).stdout
        assert re.search(r"Sampled 4 nodes|Received 4 results", log), log[-2000:]
    assert f"supernode-{name}" not in stack.compose("ps", "--all", "--format", "{{.Service}}").stdout
    stack.invoke("ca.revoke", f"org-{name}")
    out = stack.invoke("fl.unregister", name).stdout
    assert f"unregistered {name}'s SuperNode" in out
    assert {n.name: n.status for n in federation.nodes()}[name] == "unregistered"
    refused = stack.invoke("fl.unregister", stack.fed.organisations[0].name, check=False)
    assert refused.returncode != 0 and "still an organisation" in refused.stdout + refused.stderr
    wait_all_online(stack)
