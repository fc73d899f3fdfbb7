"""invoke bench, bare: the pure parts; nothing runs."""
import tomllib
from pathlib import Path

from fedops import instances
from fedops.bench import bare


def test_bare_superlink_is_insecure_without_uv_sync_on_the_loopback():
    argv = bare.superlink_argv(18000, "/tmp/x/state.db")
    assert argv[0] == "flower-superlink"
    assert "--insecure" in argv and "--disable-runtime-dependency-installation" in argv
    assert argv[argv.index("--database") + 1] == "/tmp/x/state.db"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == "18000"
    assert "--enable-supernode-auth" not in argv


def test_bare_supernode_has_its_partition_and_own_runtime_port():
    argv = bare.supernode_argv(18000, 18101, 1, 3)
    assert argv[:2] == ["flower-supernode", "--insecure"]
    assert argv[argv.index("--superlink") + 1] == "127.0.0.1:18000"
    assert argv[argv.index("--node-config") + 1] == "partition-id=1 num-partitions=3"
    assert argv[argv.index("--port") + 1] == "18101"


def test_connection_is_insecure_and_the_default():
    data = tomllib.loads(bare.connection_toml("bench", 18000))
    assert data["superlink"]["default"] == "bench"
    assert data["superlink"]["bench"] == {"address": "127.0.0.1:18000", "insecure": True}


def test_bare_env_sets_home_switches_and_path(tmp_path):
    env = bare.bare_env({"PATH": "/usr/bin", "KEEP": "1"}, tmp_path / "h", Path("/v/bin"))
    assert env["FLWR_HOME"] == str(tmp_path / "h")
    assert env["FLWR_TELEMETRY_ENABLED"] == "0" and env["FLWR_DISABLE_UPDATE_CHECK"] == "1"
    assert env["PATH"].startswith("/v/bin") and env["KEEP"] == "1"


def test_free_ports_are_distinct():
    ports = instances.free_ports(5)
    assert len(set(ports)) == 5 and all(0 < p < 65536 for p in ports)


def test_bare_federation_mirrors_the_online_sites_partitions():
    fed = bare.BareFederation([1, 2], 3)
    assert (fed.n, fed.partitions, fed.num_partitions) == (2, [1, 2], 3)
