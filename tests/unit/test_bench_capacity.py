"""invoke bench, capacity: the pure parts; nothing runs."""


from fedops import paths
from fedops.bench import capacity
from fedops.bench.report import CapacityStep


def test_capacity_steps_double_in_multiples_of_the_sites_up_to_the_cap():
    assert capacity.capacity_steps(3, 120, 3) == [3, 6, 12, 24, 48, 96, 120]
    assert capacity.capacity_steps(3, 10, 3) == [3, 6, 10]
    assert capacity.capacity_steps(3, 2, 3) == [3]
    assert capacity.capacity_steps(4, 50, 4) == [4, 8, 16, 32, 50]
    assert capacity.capacity_steps(5, 30, 3) == [5, 9, 18, 30]     # multiples of the sites' count


def test_the_probe_stops_when_memory_runs_short():
    gib = 1024 ** 3
    assert capacity.memory_short(2 * gib, 24 * gib)          # under 10 % left
    assert not capacity.memory_short(3 * gib, 24 * gib)
    assert not capacity.memory_short(None, 24 * gib) and not capacity.memory_short(gib, None)


def test_bench_container_matches_the_sites_and_is_labelled(tmp_path):
    spec = capacity.bench_container_spec(4, "abc123", "flfed/supernode:0.1.0", "f00d", tmp_path / "k",
                                      tmp_path / "ca.crt", 1, 3)
    assert spec["network_mode"] == "container:f00d"
    assert spec["user"] == "10050:10050" and spec["read_only"] and spec["cap_drop"] == ["ALL"]
    assert spec["labels"] == {"fl.bench": "1", "fl.bench.run": "abc123"}
    assert spec["restart_policy"]["Name"] == "on-failure"   # survives a SuperLink restart
    env = spec["environment"]
    assert env["SUPERLINK_ADDRESS"] == "127.0.0.1:9443"
    assert env["SUPERNODE_RUNTIME_PORT"] == str(capacity.BENCH_RUNTIME_PORT + 4) != "9094"
    assert env["SUPERNODE_HEALTH_ADDRESS"].endswith(f":{capacity.BENCH_HEALTH_PORT + 4}")
    assert (env["PARTITION_ID"], env["NUM_PARTITIONS"]) == ("1", "3")
    assert spec["volumes"][str(tmp_path / "k")] == {"bind": "/etc/fl/site/supernode_key", "mode": "ro"}


def test_supernodes_weigh_less_than_the_control_plane_and_bench_ones_like_the_sites(tmp_path):
    """Every organisation's SuperNode (the rendered Compose overlay) and every bench one
    get the same CPU weight, below the default 1024 the SuperLink and the edge keep."""
    import yaml
    from fedops import config, render, services
    overlay = yaml.safe_load(render.organisations_overlay(config.load(paths.ROOT / "federation.yaml", tmp_path / "no-local.yaml")))
    weights = {name: svc.get("cpu_shares") for name, svc in overlay["services"].items()}
    sites = {n: w for n, w in weights.items() if n.startswith("supernode-")}
    assert sites and set(sites.values()) == {services.SUPERNODE_CPU_SHARES}
    assert all(w is None for n, w in weights.items() if not n.startswith("supernode-"))   # site proxies
    assert services.SUPERNODE_CPU_SHARES < 1024
    spec = capacity.bench_container_spec(0, "t", "img", "id", tmp_path / "k", tmp_path / "ca", 0, 3)
    assert spec["cpu_shares"] == services.SUPERNODE_CPU_SHARES


def test_the_capacity_wave_grows_with_the_cores():
    assert capacity.capacity_wave(2) == 2 * capacity.CLIENTAPPS_PER_CORE
    assert capacity.capacity_wave(8) == 4 * capacity.capacity_wave(2)
    assert capacity.capacity_wave(0) == capacity.CLIENTAPPS_PER_CORE   # at least one core's worth


def test_supernode_keys_are_openssh_ec_p384_and_pass_the_images_check(tmp_path):
    from fedops import secrets
    from testcerts import load_entrypoint
    private, public = secrets.new_supernode_key("bench-x")
    assert private.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert public.startswith("ecdsa-sha2-nistp384 ") and public.endswith(" bench-x\n")
    entry = load_entrypoint(paths.SERVICES_DIR / "supernode" / "entrypoint.py", "sn_entry")
    key = tmp_path / "k"
    key.write_bytes(private)
    key.chmod(0o400)
    assert entry.key_problems(key) == []      # what the SuperNode image checks


def test_a_step_that_would_not_fit_in_memory_is_not_started():
    """The memory per SuperNode is read from the steps so far; 96 on 23.5 GiB was tried
    without this and left 0.2 GiB (Keycloak killed, the engine unresponsive)."""
    gib, mib = 1024 ** 3, 1024 ** 2
    total = int(23.5 * gib)
    steps = [CapacityStep(3, 20.0, "finished:completed", min_available=21 * gib),
             CapacityStep(24, 170.0, "finished:completed", min_available=21 * gib - 21 * 220 * mib),
             CapacityStep(48, 615.0, "finished:completed", min_available=21 * gib - 45 * 220 * mib)]
    why = capacity.memory_forecast(steps, 96, total)
    assert why and "96" in why and "220 MiB per SuperNode" in why
    assert capacity.memory_forecast(steps, 60, total) is None        # 12 more fit
    assert capacity.memory_forecast(steps[:1], 96, total) is None    # one step: nothing to go by
    assert capacity.memory_forecast(steps, 96, None) is None


def test_no_more_supernodes_are_started_once_memory_is_short():
    """The forecast is an estimate: adding SuperNodes stops at the host's own figure."""
    gib = 1024 ** 3
    nodes = capacity.BenchNodes.__new__(capacity.BenchNodes)   # no engine: nothing may start
    nodes.fed = type("Fed", (), {"organisations": []})()
    readings = iter([2 * gib])
    try:
        nodes.add(5, 24 * gib, available=lambda: next(readings))
    except capacity.MemoryShort as exc:
        assert "2.0 GiB of 24.0 GiB available after 0 of 5" in str(exc)
    else:
        raise AssertionError("a SuperNode was started with 2 of 24 GiB available")
