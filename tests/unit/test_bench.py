"""invoke bench: the pure parts (command lines, parsing, the report); nothing runs."""
import tomllib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest

from fedops import bench, federation


def test_bare_superlink_is_insecure_without_uv_sync_on_the_loopback():
    argv = bench.superlink_argv(18000, "/tmp/x/state.db")
    assert argv[0] == "flower-superlink"
    assert "--insecure" in argv and "--disable-runtime-dependency-installation" in argv
    assert argv[argv.index("--database") + 1] == "/tmp/x/state.db"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == "18000"
    assert "--enable-supernode-auth" not in argv


def test_bare_supernode_has_its_partition_and_own_runtime_port():
    argv = bench.supernode_argv(18000, 18101, 1, 3)
    assert argv[:2] == ["flower-supernode", "--insecure"]
    assert argv[argv.index("--superlink") + 1] == "127.0.0.1:18000"
    assert argv[argv.index("--node-config") + 1] == "partition-id=1 num-partitions=3"
    assert argv[argv.index("--port") + 1] == "18101"


def test_connection_is_insecure_and_the_default():
    data = tomllib.loads(bench.connection_toml("bench", 18000))
    assert data["superlink"]["default"] == "bench"
    assert data["superlink"]["bench"] == {"address": "127.0.0.1:18000", "insecure": True}


def test_flwr_run_and_run_config():
    cfg = federation.run_config(3)
    assert cfg == "num-server-rounds=3"
    assert federation.run_config(1, {"min-nodes": 6}) == "num-server-rounds=1 min-nodes=6"
    assert federation.run_config(1, {"name": "x", "on": True}) == 'num-server-rounds=1 name="x" on=true'
    argv = bench.flwr_run_argv(Path("/a/digits"), "bench", cfg)
    assert argv == ["flwr", "run", "/a/digits", "bench", "--run-config", "num-server-rounds=3",
                    "--format", "json"]


def test_bare_env_sets_home_switches_and_path(tmp_path):
    env = bench.bare_env({"PATH": "/usr/bin", "KEEP": "1"}, tmp_path / "h", Path("/v/bin"))
    assert env["FLWR_HOME"] == str(tmp_path / "h")
    assert env["FLWR_TELEMETRY_ENABLED"] == "0" and env["FLWR_DISABLE_UPDATE_CHECK"] == "1"
    assert env["PATH"].startswith("/v/bin") and env["KEEP"] == "1"


def test_free_ports_are_distinct():
    ports = bench.free_ports(5)
    assert len(set(ports)) == 5 and all(0 < p < 65536 for p in ports)


@pytest.mark.parametrize("stats, expected", [
    ({"memory_stats": {"usage": 1000, "stats": {"total_inactive_file": 300}}}, 700),   # cgroup v1
    ({"memory_stats": {"usage": 1000, "stats": {"inactive_file": 100}}}, 900),         # cgroup v2
    ({"memory_stats": {"usage": 1000, "stats": {}}}, 1000),
    ({"memory_stats": {}}, None),                                                       # stopped
])
def test_memory_used_like_docker_stats(stats, expected):
    assert bench.memory_used(stats) == expected


def test_meminfo_and_cpu_model():
    info = bench.parse_meminfo("MemTotal:       24576000 kB\nMemAvailable:   20000000 kB\nHugePages_Total: 0\n")
    assert info["MemTotal"] == 24576000 * 1024 and info["HugePages_Total"] == 0
    cpu = "processor\t: 0\nmodel name\t: AMD EPYC  7B13 64-Core Processor\nflags\t: fpu\n"
    assert bench.parse_cpu_model(cpu) == "AMD EPYC 7B13 64-Core Processor"


def test_capacity_steps():
    assert bench.capacity_steps(3, 12, 3) == [3, 6, 9, 12]
    assert bench.capacity_steps(3, 10, 3) == [3, 6, 9, 10]
    assert bench.capacity_steps(2, 12, 3) == [2, 5, 8, 11, 12]
    assert bench.capacity_steps(3, 2, 3) == [3]


@dataclass
class N:
    status: str
    name: str = ""


def test_count_online_tells_organisations_from_other_nodes():
    nodes = [N("online", "alpha"), N("offline", "bravo"), N("online", "charlie"), N("online", "bench-x-0")]
    assert bench.count_online(nodes, {"alpha", "bravo", "charlie"}) == (2, 3)
    assert bench.count_online([N("online"), N("online"), N("offline")], {"alpha"}) == (2, 2)   # names unknown


def test_online_organisations_keep_federation_order():
    nodes = [N("online", "charlie"), N("offline", "alpha"), N("online", "bravo"), N("online", "bench-x-0")]
    assert bench.online_organisations(nodes, ["alpha", "bravo", "charlie"]) == ["bravo", "charlie"]
    assert bench.online_organisations([N("online"), N("online")], ["alpha", "bravo", "charlie"]) == ["alpha", "bravo"]


def test_bare_federation_mirrors_the_online_sites_partitions():
    bare = bench.BareFederation([1, 2], 3)
    assert (bare.n, bare.partitions, bare.num_partitions) == (2, [1, 2], 3)


def test_bench_container_matches_the_sites_and_is_labelled(tmp_path):
    spec = bench.bench_container_spec(4, "abc123", "flfed/supernode:0.1.0", "f00d", tmp_path / "k",
                                      tmp_path / "ca.crt", 1, 3)
    assert spec["network_mode"] == "container:f00d"
    assert spec["user"] == "10050:10050" and spec["read_only"] and spec["cap_drop"] == ["ALL"]
    assert spec["labels"] == {"fl.bench": "1", "fl.bench.run": "abc123"}
    assert spec["restart_policy"]["Name"] == "on-failure"   # survives a SuperLink restart
    env = spec["environment"]
    assert env["SUPERLINK_ADDRESS"] == "127.0.0.1:9443"
    assert env["SUPERNODE_RUNTIME_PORT"] == str(bench.BENCH_RUNTIME_PORT + 4) != "9094"
    assert env["SUPERNODE_HEALTH_ADDRESS"].endswith(f":{bench.BENCH_HEALTH_PORT + 4}")
    assert (env["PARTITION_ID"], env["NUM_PARTITIONS"]) == ("1", "3")
    assert spec["volumes"][str(tmp_path / "k")] == {"bind": "/etc/fl/site/supernode_key", "mode": "ro"}


def test_supernode_keys_are_openssh_ec_p384_and_pass_the_images_check(tmp_path):
    from fedops import secrets
    from testcerts import load_entrypoint
    private, public = secrets.new_supernode_key("bench-x")
    assert private.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert public.startswith("ecdsa-sha2-nistp384 ") and public.endswith(" bench-x\n")
    entry = load_entrypoint(bench.paths.SERVICES_DIR / "supernode" / "entrypoint.py", "sn_entry")
    key = tmp_path / "k"
    key.write_bytes(private)
    key.chmod(0o400)
    assert entry.key_problems(key) == []      # what the SuperNode image checks


def result(stack=(40.0, 42.0), bare=(38.0, 39.0), capacity=()):
    r = bench.Result(datetime(2026, 11, 29, 15, 0, tzinfo=timezone.utc), 3, 2, 3,
                     {"cpu": "Test CPU", "cores": "2", "memory": "23.4 GiB", "kernel": "Linux 6.1",
                      "docker": "20.10.24", "flwr": "1.42.0", "python": "3.11.7"},
                     max_supernodes=12)
    for s, b in zip(stack, bare):
        r.timings.append(bench.Timing("stack", s, "11", "finished:completed", s - 3, 3))
        r.timings.append(bench.Timing("bare", b, "22", "finished:completed", b - 1, 3))
    r.memory = {"flfed-supernode-alpha-1": {"service": "supernode-alpha", "peak": 300 * bench.MIB,
                                            "limit": 1024 * bench.MIB},
                "flfed-nginx-1": {"service": "nginx", "peak": 20 * bench.MIB, "limit": None}}
    r.capacity = list(capacity)
    return r


def test_ratio_uses_medians_of_completed_runs():
    r = result()
    assert r.ratio == pytest.approx(41.0 / 38.5)
    r.timings.append(bench.Timing("bare", 1.0, "33", "finished:failed", None))
    assert r.ratio == pytest.approx(41.0 / 38.5)       # the failed run is left out
    assert bench.ratio(None, 3.0) is None


def test_disturbed_runs_are_left_out_while_clean_ones_exist():
    r = result(stack=(40.0, 42.0), bare=(38.0, 39.0))
    r.timings.append(bench.Timing("stack", 100.0, "44", "finished:completed", 97.0, 3, failures=1))
    assert r.walls("stack") == [40.0, 42.0]
    only_disturbed = result(stack=(), bare=(38.0,))
    only_disturbed.timings.append(bench.Timing("stack", 100.0, "44", "finished:completed", 97.0, 3, failures=1))
    assert only_disturbed.walls("stack") == [100.0]   # nothing better: used, with a note in the report


def test_replies_and_failures_are_counted_from_the_log():
    stats = {}
    on_line = bench.show_progress("t", stats)
    for line in ("\x1b[92mINFO \x1b[0m:      aggregate_train: Received 3 results and 0 failures",
                 "INFO :      aggregate_evaluate: Received 2 results and 1 failures",
                 "INFO :      [ROUND 2/3]"):
        on_line(line)
    assert stats == {"failures": 1, "min_replies": 2}


def test_report_has_machine_times_verdict_memory_and_capacity():
    steps = [bench.CapacityStep(3, 20.0, "finished:completed", peak_supernode=350 * bench.MIB,
                                min_available=20 * 1024 ** 3),
             bench.CapacityStep(6, 30.0, "finished:completed", peak_supernode=360 * bench.MIB,
                                min_available=19 * 1024 ** 3),
             bench.CapacityStep(9, None, "SuperNodes did not come online")]
    text = bench.render_report(result(capacity=steps))
    assert text.startswith("<!-- Generated by `invoke bench`")
    assert "2026-11-29 15:00 UTC" in text
    for fact in ("Test CPU, 2 cores", "23.4 GiB", "Linux 6.1", "20.10.24", "1.42.0"):
        assert fact in text
    assert "| median | 41.0 | 38.5 | 1.06x | <= 1.15x | **met** |" in text
    # SuperNodes first in the memory table
    assert text.index("flfed-supernode-alpha-1") < text.index("flfed-nginx-1")
    assert "| flfed-supernode-alpha-1 | supernode-alpha | 300 | 1024 |" in text
    assert "| 6 | finished:completed | 0 | 30.0 | 360 | 19.0 |" in text
    assert "a round completed with 6 SuperNodes; with 9 it did not (SuperNodes did not come online)" in text


def test_report_says_when_the_target_is_missed_or_capacity_skipped():
    r = result(stack=(60.0,), bare=(40.0,))
    r.capacity_note = "skipped (--skip-capacity)"
    text = bench.render_report(r)
    assert "1.50x" in text and "**NOT met**" in text
    assert "Not measured in this run: skipped (--skip-capacity)." in text


def test_capacity_summary_at_the_cap():
    steps = [bench.CapacityStep(n, 10.0, "finished:completed") for n in (3, 6, 9, 12)]
    assert "12 SuperNodes, the cap of this probe" in bench.capacity_summary(steps, 12)


def test_bench_task_is_top_level_with_help():
    # in a fresh interpreter: invoke's Task.get_arguments() pops the help texts, so
    # asking in this process would disturb the other tests of every task's help
    import subprocess
    import sys
    import tasks
    assert "bench" in tasks.ns.tasks
    out = subprocess.run([sys.executable, "-m", "invoke", "--help", "bench"], cwd=bench.paths.ROOT,
                         capture_output=True, text=True, check=True).stdout
    for option, words in (("--rounds", "default 3"), ("--repeat", "medians"),
                          ("--max-supernodes", "capacity"), ("--skip-capacity", "skip")):
        line = next(l for l in out.splitlines() if option in l)
        assert words in out[out.index(line):], option
