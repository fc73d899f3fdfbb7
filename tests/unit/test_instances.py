"""Throwaway deployments' settings (fedops/instances.py): chosen without Docker here."""
import ipaddress

import pytest

from fedops import instances

ROUTES = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0100C80A\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0000C80A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
br-1\t000014AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
"""


def test_host_routes_are_read_without_the_default_route():
    assert instances.host_routes(ROUTES) == [ipaddress.ip_network("10.200.0.0/24"),
                                             ipaddress.ip_network("172.20.0.0/16")]


def test_free_subnets_avoid_what_is_taken_and_each_other():
    taken = instances.host_routes(ROUTES) + [ipaddress.ip_network("10.201.0.0/16")]
    chosen = [ipaddress.ip_network(s) for s in instances.free_subnets(5, taken)]
    assert len(set(chosen)) == 5
    for net in chosen:
        assert net.prefixlen == 24 and net.subnet_of(instances.SUBNET_RANGE)
        assert not any(net.overlaps(t) for t in taken)


def test_no_free_subnet_left_is_an_error():
    with pytest.raises(RuntimeError, match="no free /24"):
        instances.free_subnets(1, [instances.SUBNET_RANGE])


def test_an_instance_has_its_own_project_tags_ports_subnets_and_domain(tmp_path, monkeypatch):
    monkeypatch.setattr(instances, "free_subnets", lambda n: [f"10.200.{i}.0/24" for i in range(n)])
    folder = instances.create({"FL_BUILD_EXTRA_CA": "/etc/ssl/bundle.pem", "FL_HTTPS_PORT": "443"},
                              "fltry-", "try", "try.localhost", FL_EASYRSA="container")
    try:
        env = dict(line.split("=", 1) for line in (folder / ".env.local").read_text().splitlines()
                   if line and not line.startswith("#"))
        assert env["COMPOSE_PROJECT_NAME"] == folder.name and folder.name.startswith("fltry-")
        assert env["IMAGE_TAG"] == "try" and env["FL_EASYRSA"] == "container"
        assert env["FL_BUILD_EXTRA_CA"] == "/etc/ssl/bundle.pem"      # how to build here: taken over
        assert env["FL_HTTPS_PORT"] != "443"                         # the deployment's own: not
        assert len({env[p] for p in instances.PORTS}) == len(instances.PORTS)
        assert env["FL_SUPERLINK_SUBNET"] == "10.200.3.0/24"
        assert (folder / "federation.local.yaml").read_text() == "domain: try.localhost\n"
    finally:
        instances.destroy(folder)
    assert not folder.exists()
