"""Trust zones (task list 2.1, 6): who reaches what inside the engine, measured.

From inside each service's own network namespace (a throwaway container joined to it,
running tests/stack/probes/reach.py), every target of networks/reachability.yaml is
probed over every network the two share; the measured matrix is printed and must equal
the intended one written there."""
from __future__ import annotations

import json
import socket
import subprocess

import pytest
import yaml

from fedops import compose, engine, paths

REACHABILITY = yaml.safe_load((paths.ROOT / "networks" / "reachability.yaml").read_text())
PROBE = paths.ROOT / "tests" / "stack" / "probes" / "reach.py"


def inspect_all(stack) -> dict[str, dict]:
    containers = engine.project_containers(compose.project_name())
    return {service: c.attrs for service, c in containers.items()}


def addresses(attrs: dict) -> dict[str, str]:
    """{network: IP} of a container (a SuperNode has none: it shares its proxy's)."""
    return {name: net["IPAddress"] for name, net in attrs["NetworkSettings"]["Networks"].items()
            if net.get("IPAddress")}


def run_probe(source_id: str, image: str, targets: dict) -> dict[str, str]:
    proc = subprocess.run(
        ["docker", "run", "--rm", "--network", f"container:{source_id}", "--read-only", "--cap-drop", "ALL",
         "--security-opt", "no-new-privileges", "-v", f"{PROBE}:/probe.py:ro", "--entrypoint", "python3",
         image, "/probe.py", json.dumps(targets)],
        capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def measured(stack) -> dict[str, dict[str, str]]:
    info = inspect_all(stack)
    hostnames = stack.rendered()["hostnames"]
    image = info["nginx"]["Config"]["Image"]     # has Debian's python3; any of ours would do
    # a service of an optional profile that does not run (Grafana without its image)
    absent = {s for s in REACHABILITY.get("optional", []) if s not in info}
    if absent:
        print(f"\nnot running, left out of the matrix: {', '.join(sorted(absent))}")
    results = {}
    for source in REACHABILITY["allowed"]:
        if source in absent:
            continue
        own = addresses(info[source])
        targets = {}
        for name, t in REACHABILITY["targets"].items():
            if t["service"] == source or t["service"] in absent:
                continue
            theirs = addresses(info[t["service"]])
            targets[name] = {"addresses": [ip for net, ip in theirs.items() if net in own],
                             "port": t["port"], "probe": t["probe"],
                             "host": hostnames[t["host"]] if t.get("host") else None, "path": t.get("path")}
        results[source] = run_probe(info[source]["Id"], image, targets)
    print_matrix(results)
    return results


def print_matrix(results: dict[str, dict[str, str]]) -> None:
    targets = list(REACHABILITY["targets"])
    width = max(map(len, targets))
    sources = list(results)
    print("\nreachability (A allowed, . refused, - itself):")
    print(" " * (width + 2) + "  ".join(s[:9].rjust(9) for s in sources))
    for t in targets:
        cells = []
        for s in sources:
            r = results[s].get(t)
            cells.append(("-" if r is None else "A" if r.startswith("allowed") else ".").rjust(9))
        print(f"{t:{width}}  " + "  ".join(cells))


def test_the_reachability_matrix_is_the_intended_one(measured):
    mismatches = []
    for source, results in measured.items():
        allowed = set(REACHABILITY["allowed"][source])
        for target, result in results.items():
            ok = result.startswith("allowed")
            if ok != (target in allowed):
                mismatches.append(f"{source} -> {target}: {'allowed' if target in allowed else 'refused'} "
                                  f"intended, measured {result}")
    assert not mismatches, "\n".join(mismatches)


def test_nothing_but_the_edge_reaches_the_superlink(measured):
    for source, results in measured.items():
        for target in ("superlink", "superlink-health"):
            if source not in ("nginx", "superlink"):
                assert results[target].startswith("refused"), (source, target, results[target])


def test_sites_reach_only_the_edges_fleet_host(measured):
    reached = {t for t, r in measured["siteproxy-alpha"].items() if r.startswith("allowed")}
    assert reached == {"edge-fleet"}


def test_every_site_is_in_the_same_zone(stack):
    """The other sites' namespaces sit on the same networks as alpha's (one template)."""
    info = inspect_all(stack)
    alpha = set(addresses(info["siteproxy-alpha"]))
    for org in stack.fed.organisations:
        assert set(addresses(info[f"siteproxy-{org.name}"])) == alpha
        mode = info[f"supernode-{org.name}"]["HostConfig"]["NetworkMode"]
        assert mode == f"container:{info[f'siteproxy-{org.name}']['Id']}"


def test_no_one_reaches_the_postgres_superuser_over_tcp(stack, measured):
    """With the superuser's own password, from every namespace that reaches PostgreSQL
    at all (PostgreSQL's own client, from its image)."""
    info = inspect_all(stack)
    image = info["postgres"]["Config"]["Image"]
    password = stack.secret("postgres_password")
    sources = [s for s, r in measured.items() if r.get("postgres", "").startswith("allowed")]
    assert sources, "nothing reaches PostgreSQL: the matrix test says more"
    for source in sources:
        proc = subprocess.run(
            ["docker", "run", "--rm", "--network", f"container:{info[source]['Id']}", "-e", f"PGPASSWORD={password}",
             "--entrypoint", "psql", image, "host=postgres user=postgres dbname=postgres sslmode=require "
             "connect_timeout=5", "-c", "select 1"], capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0, f"{source} logged in as the superuser over TCP"
        assert 'rejects connection for host' in proc.stderr and 'user "postgres"' in proc.stderr, proc.stderr


def host_address() -> str:
    """This machine's primary address (outside every network of the engine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))        # no packet is sent: it only picks a route
        return probe.getsockname()[0]


def test_internal_networks_have_no_way_out(stack):
    """Every network but the edge's ingress and the egress proxy's is internal, the
    ingress one has no NAT, and only the egress proxy is on the egress network;
    measured: no container but those two reaches a listener on this machine's own
    address (outside the engine), nor an address on the internet. (What the egress
    proxy lets through: tests/stack/test_notebooks.py.)"""
    model = json.loads(compose.call("config", "--format", "json").stdout)
    for name, net in model["networks"].items():
        if name == "fl-ingress-network":
            assert not net.get("internal")
            assert net["driver_opts"]["com.docker.network.bridge.enable_ip_masquerade"] == "false"
        elif name == "fl-egress-network":
            assert not net.get("internal")
            members = [s for s, svc in model["services"].items() if name in (svc.get("networks") or {})]
            assert members == ["egress-proxy"], members
        else:
            assert net.get("internal") is True, name
    info = inspect_all(stack)
    image = info["nginx"]["Config"]["Image"]
    with socket.create_server(("0.0.0.0", 0)) as listener:
        port = listener.getsockname()[1]
        outside = {"this-machine": {"addresses": [host_address()], "port": port, "probe": "tcp"},
                   "internet": {"addresses": ["192.0.2.10"], "port": 443, "probe": "tcp"}}   # TEST-NET-1
        reached = {}
        for service, attrs in info.items():
            if service in ("nginx", "egress-proxy") or attrs["HostConfig"]["NetworkMode"].startswith("container:"):
                continue   # the edge, the egress proxy: their own networks; a SuperNode: its proxy's namespace
            results = run_probe(attrs["Id"], image, outside)
            reached.update({f"{service} -> {t}": r for t, r in results.items() if r.startswith("allowed")})
    assert not reached, reached
