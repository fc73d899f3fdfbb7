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
