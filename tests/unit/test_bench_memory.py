"""invoke bench, memory: the pure parts; nothing runs."""
import pytest

from fedops.bench import machine, memory


@pytest.mark.parametrize("stats, expected", [
    ({"memory_stats": {"usage": 1000, "stats": {"total_inactive_file": 300}}}, 700),   # cgroup v1
    ({"memory_stats": {"usage": 1000, "stats": {"inactive_file": 100}}}, 900),         # cgroup v2
    ({"memory_stats": {"usage": 1000, "stats": {}}}, 1000),
    ({"memory_stats": {}}, None),                                                       # stopped
])
def test_memory_used_like_docker_stats(stats, expected):
    assert memory.memory_used(stats) == expected


def test_meminfo_and_cpu_model():
    info = machine.parse_meminfo("MemTotal:       24576000 kB\nMemAvailable:   20000000 kB\nHugePages_Total: 0\n")
    assert info["MemTotal"] == 24576000 * 1024 and info["HugePages_Total"] == 0
    cpu = "processor\t: 0\nmodel name\t: AMD EPYC  7B13 64-Core Processor\nflags\t: fpu\n"
    assert machine.parse_cpu_model(cpu) == "AMD EPYC 7B13 64-Core Processor"


def test_processes_name_the_program_a_python_runs():
    text = ("/sbin/docker-init -- python3 /usr/local/bin/entrypoint.py\t704\t48\n"
            "/opt/venv/bin/python3 /opt/venv/bin/flower-supernode --superlink 127.0.0.1:9443\t146524\t95260\n"
            "/opt/venv/bin/python3 -c import os\t8000\t2000\n"          # a probe of ours
            "garbage line\n")
    assert memory.parse_processes(text) == [
        {"command": "docker-init", "rss": 704 * 1024, "anon": 48 * 1024},
        {"command": "flower-supernode", "rss": 146524 * 1024, "anon": 95260 * 1024}]


def test_process_probe_reads_this_machines_proc():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", memory.PROCESSES_PY], capture_output=True, text=True, check=True)
    procs = memory.parse_processes(out.stdout)
    assert procs and all(p["rss"] >= p["anon"] >= 0 for p in procs)     # pytest itself, at least


def test_many_containers_are_sampled_less_often():
    assert memory.sample_period(3, 1.0) == 1.0
    assert memory.sample_period(10, 1.0) == 1.0
    assert memory.sample_period(51, 1.0) == pytest.approx(51 / memory.STATS_PER_SECOND)
    assert memory.sample_period(0, 2.0) == 2.0
