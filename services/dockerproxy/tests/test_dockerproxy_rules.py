"""Every rule of the Docker API proxy, on the pure decision function."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("dockerproxy", Path(__file__).parents[1] / "dockerproxy.py")
dp = importlib.util.module_from_spec(spec)
sys.modules["dockerproxy"] = dp
spec.loader.exec_module(dp)

POLICY = dp.Policy(prefix="jupyter-proj", images=("flfed/notebook:nb",), network="proj_fl-notebooks-network")
NAMES = {"abc123": "/jupyter-proj-alice", "jupyter-proj-alice": "/jupyter-proj-alice",
         "pg": "/proj-postgres-1", "other": "/jupyter-otherproj-bob"}


def lookup(ref):
    return NAMES.get(ref)


def create_body(**host):
    """What DockerSpawner sends (docker-py's create_container), with HostConfig changes."""
    host_config = {"NetworkMode": POLICY.network, "Binds": ["jupyter-proj-home-alice:/home/jovyan:rw"],
                   "CapDrop": ["ALL"], "SecurityOpt": ["no-new-privileges:true"], "Memory": 2 << 30,
                   "CpuPeriod": 100000, "CpuQuota": 100000, "AutoRemove": True, "PidsLimit": 512}
    host_config.update(host)
    return json.dumps({"Image": "flfed/notebook:nb", "Env": ["JUPYTERHUB_API_TOKEN=x"],
                       "Volumes": {"/home/jovyan": {}}, "ExposedPorts": {"8888/tcp": {}},
                       "HostConfig": host_config}).encode()


def decide(method, path, body=b""):
    return dp.decide(POLICY, method, path, body, lookup)


@pytest.mark.parametrize("method,path", [
    ("GET", "/_ping"), ("HEAD", "/_ping"), ("GET", "/version"), ("GET", "/v1.41/version"),
    ("GET", "/v1.41/images/flfed/notebook:nb/json"),
    ("GET", "/v1.41/containers/abc123/json"), ("POST", "/v1.41/containers/abc123/start"),
    ("POST", "/v1.41/containers/abc123/stop?t=10"), ("DELETE", "/v1.41/containers/abc123?v=True"),
    ("GET", "/v1.41/containers/missing/json"),
])
def test_the_spawners_calls_pass(method, path):
    assert decide(method, path).allowed


def test_a_spawners_create_passes():
    d = decide("POST", "/v1.41/containers/create?name=jupyter-proj-alice", create_body())
    assert d.allowed, d.detail


@pytest.mark.parametrize("host,rule", [
    ({"Privileged": True}, "privileged"),
    ({"CapAdd": ["NET_ADMIN"]}, "capabilities"),
    ({"Devices": [{"PathOnHost": "/dev/kmsg"}]}, "devices"),
    ({"DeviceRequests": [{"Driver": "nvidia", "Count": -1, "Capabilities": [["gpu"]]}]}, "devices"),
    ({"PidMode": "host"}, "host-namespace"),
    ({"IpcMode": "host"}, "host-namespace"),
    ({"NetworkMode": "host"}, "network"),
    ({"NetworkMode": "proj_fl-services-network"}, "network"),
    ({"NetworkMode": "container:proj-postgres-1"}, "network"),
    ({"Binds": ["/:/host"]}, "bind-mount"),
    ({"Binds": ["/var/run/docker.sock:/var/run/docker.sock"]}, "bind-mount"),
    ({"Binds": ["proj_postgres-data:/data"]}, "volume-name"),
    ({"Mounts": [{"Type": "bind", "Source": "/etc", "Target": "/etc"}]}, "bind-mount"),
    ({"SecurityOpt": ["seccomp=unconfined"]}, "security-opt"),
    ({"VolumesFrom": ["proj-postgres-1"]}, "host-config"),
    ({"PortBindings": {"8888/tcp": [{"HostIp": "0.0.0.0"}]}}, "host-config"),
    ({"UsernsMode": "host"}, "host-config"),
])
def test_a_dangerous_create_is_refused_naming_the_rule(host, rule):
    d = decide("POST", "/v1.41/containers/create?name=jupyter-proj-alice", create_body(**host))
    assert not d.allowed and d.rule == rule, d


def test_gpu_requests_pass_only_in_the_gpu_profile():
    gpu = dp.Policy(**{**POLICY.__dict__, "gpu": True})
    body = create_body(DeviceRequests=[{"Driver": "nvidia", "Count": -1, "Capabilities": [["gpu"]]}])
    assert dp.decide(gpu, "POST", "/containers/create?name=jupyter-proj-a", body, lookup).allowed
    other = create_body(DeviceRequests=[{"Driver": "x", "Capabilities": [["compute"]]}])
    assert dp.decide(gpu, "POST", "/containers/create?name=jupyter-proj-a", other, lookup).rule == "devices"


def test_another_image_is_refused():
    body = json.loads(create_body())
    body["Image"] = "flfed/postgres:nb"
    d = decide("POST", "/containers/create?name=jupyter-proj-alice", json.dumps(body).encode())
    assert d.rule == "image"
    assert decide("GET", "/images/flfed/postgres:nb/json").rule == "image"


def test_other_networks_in_the_endpoints_are_refused():
    body = json.loads(create_body())
    body["NetworkingConfig"] = {"EndpointsConfig": {"proj_fl-services-network": {}}}
    assert decide("POST", "/containers/create?name=jupyter-proj-a", json.dumps(body).encode()).rule == "network"


def test_root_user_is_refused():
    body = json.loads(create_body())
    body["User"] = "0"
    assert decide("POST", "/containers/create?name=jupyter-proj-a", json.dumps(body).encode()).rule == "root"


@pytest.mark.parametrize("name", ["proj-postgres-1", "jupyter-otherproj-bob", "", "jupyter-proj"])
def test_create_with_a_name_outside_the_prefix_is_refused(name):
    assert decide("POST", f"/containers/create?name={name}", create_body()).rule == "container-name"


@pytest.mark.parametrize("method,path", [
    ("POST", "/v1.41/containers/pg/stop"), ("DELETE", "/v1.41/containers/pg"),
    ("GET", "/v1.41/containers/pg/json"), ("POST", "/containers/other/start"),
])
def test_containers_that_are_not_this_instances_notebooks_are_refused(method, path):
    assert decide(method, path).rule == "container-name"


@pytest.mark.parametrize("method,path", [
    ("GET", "/v1.41/containers/json?all=1"),            # list every container
    ("POST", "/v1.41/containers/abc123/exec"),          # exec
    ("POST", "/v1.41/exec/123/start"),
    ("GET", "/v1.41/containers/abc123/logs"),
    ("POST", "/v1.41/containers/abc123/kill"),
    ("GET", "/v1.41/containers/abc123/archive?path=/"),
    ("POST", "/v1.41/images/create?fromImage=evil"),    # pull
    ("POST", "/v1.41/build"),
    ("POST", "/v1.41/volumes/create"),
    ("GET", "/v1.41/volumes"),
    ("POST", "/v1.41/networks/create"),
    ("POST", "/v1.41/networks/x/connect"),
    ("GET", "/v1.41/info"),
    ("POST", "/v1.41/swarm/init"),
    ("GET", "/v1.41/containers/abc123/json/../../../info"),
])
def test_every_other_call_is_refused(method, path):
    d = decide(method, path)
    assert not d.allowed and d.rule in ("endpoint",), d


def test_start_with_a_host_config_is_refused():
    d = decide("POST", "/containers/abc123/start", json.dumps({"Privileged": True}).encode())
    assert d.rule == "start-body"


def test_a_body_that_is_not_json_is_refused():
    assert decide("POST", "/containers/create?name=jupyter-proj-a", b"{nope").rule == "create-body"


def test_the_policy_comes_from_the_environment():
    env = {"FL_NOTEBOOK_PREFIX": "jupyter-p", "FL_NOTEBOOK_IMAGES": "a:1, b:2", "FL_NOTEBOOK_NETWORK": "n"}
    assert dp.Policy.from_env(env) == dp.Policy("jupyter-p", ("a:1", "b:2"), "n")
    with pytest.raises(SystemExit, match="FL_NOTEBOOK_NETWORK"):
        dp.Policy.from_env({k: v for k, v in env.items() if k != "FL_NOTEBOOK_NETWORK"})
    with pytest.raises(SystemExit, match="must start with 'jupyter-'"):
        dp.Policy.from_env({**env, "FL_NOTEBOOK_PREFIX": "proj"})
