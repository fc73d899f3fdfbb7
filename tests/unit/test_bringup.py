"""Bring-up by dependencies (fedops/bringup.py): the graph from the Compose model."""
import pytest

from fedops import bringup, engine, render, stack
from fedops.errors import FedopsError


def model(**services):
    return {"services": services}


def svc(*needs, phase="-", network_mode=None):
    out = {"depends_on": {n: {"condition": "service_healthy"} for n in needs}, "labels": {"fl.phase": phase}}
    if network_mode:
        out["network_mode"] = network_mode
    return out


def test_levels_start_independent_chains_together():
    nodes = bringup.graph(model(postgres=svc(), keycloak=svc("postgres"), superlink=svc(),
                                nginx=svc(), supernode=svc("superlink", "nginx")))
    assert bringup.order(nodes) == [["nginx", "postgres", "superlink"], ["keycloak", "supernode"]]
    assert bringup.chains(nodes)["supernode"] in (["nginx", "supernode"], ["superlink", "supernode"])
    assert bringup.chains(nodes)["keycloak"] == ["postgres", "keycloak"]


def test_a_shared_network_namespace_is_a_dependency():
    nodes = bringup.graph(model(proxy=svc(), node=svc(network_mode="service:proxy")))
    assert nodes["node"].needs == ("proxy",)


def test_a_cycle_or_an_unknown_dependency_is_refused():
    with pytest.raises(FedopsError, match="cycle"):
        bringup.graph(model(a=svc("b"), b=svc("a")))
    with pytest.raises(FedopsError, match="depends on nowhere, which is not defined"):
        bringup.graph(model(a=svc("nowhere")))


def test_the_stacks_graph_follows_the_task_lists_phases(fed, hermetic):
    """The real compose files: every service carries its phase, SuperNodes need their
    site proxy, the SuperLink and the edge; Keycloak needs PostgreSQL; nothing else
    waits, so the database chain and the federation chain start side by side."""
    import json
    import shutil
    import subprocess
    from fedops import compose
    if not shutil.which("docker") or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode:
        pytest.skip("needs the docker CLI with the Compose v2 plugin (no engine)")
    render.render_all(fed)
    out = compose.call("config", "--format", "json")
    assert out.returncode == 0, out.stderr
    nodes = bringup.graph(json.loads(out.stdout))
    assert nodes["keycloak"].needs == ("postgres",)
    for org in fed.organisations:
        assert set(nodes[org.service].needs) == {f"siteproxy-{org.name}", "superlink", "nginx"}
        assert nodes[org.service].phase == "4.2 SuperNodes"
    first = bringup.order(nodes)[0]
    assert {"postgres", "superlink", "nginx", "ctlgate"} <= set(first)
    assert {n.phase for n in nodes.values()} == {"3.1 database", "3.2 identity", "3.3 edge",
                                                 "4.1 SuperLink", "4.2 SuperNodes", "5.1 notebooks",
                                                 "5.2 monitoring"}
    # the exporters wait for what they read; Prometheus and Alertmanager for nothing
    assert nodes["postgres-exporter"].needs == ("postgres",)
    assert nodes["nginx-exporter"].needs == ("nginx",)
    assert {"prometheus", "alertmanager", "node-exporter"} <= set(first)


@pytest.mark.parametrize(("test", "argv"), [
    (["CMD", "pg_isready", "-q"], ["pg_isready", "-q"]),
    (["CMD-SHELL", "curl -f localhost || exit 1"], ["/bin/sh", "-c", "curl -f localhost || exit 1"]),
    (["NONE"], None), (None, None)])
def test_a_healthcheck_becomes_an_exec_probe(test, argv):
    assert engine.healthcheck_command(test) == argv


def test_a_crash_loop_is_reported_after_its_window():
    watch = stack.CrashWatch(window=100)
    down = {"a": stack.Readiness("a", state="restarting")}
    assert watch.update(down, now=0) == []
    assert watch.update(down, now=99) == []
    assert watch.update(down, now=101) == ["a"]
    assert watch.update({"a": stack.Readiness("a", state="running")}, now=102) == ["a"]   # not ready yet
    assert watch.update({"a": stack.Readiness("a", state="running", ready=True)}, now=103) == []


def test_a_container_restarted_by_its_policy_counts_as_down():
    """It exits at once and is restarted: seen "running" most of the time."""
    watch = stack.CrashWatch(window=100)
    running = lambda restarts: {"a": stack.Readiness("a", state="running", container_id="c", restarts=restarts)}
    assert watch.update(running(0), now=0) == []
    assert watch.update(running(3), now=10) == []
    assert watch.update(running(9), now=111) == ["a"]


def test_a_recreated_container_is_not_a_restart():
    watch = stack.CrashWatch(window=100)
    assert watch.update({"a": stack.Readiness("a", state="running", container_id="old", restarts=5)}, now=0) == []
    assert watch.update({"a": stack.Readiness("a", state="running", container_id="new", restarts=0)}, now=200) == []
