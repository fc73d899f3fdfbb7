"""Facts about the machine the benchmark ran on (CPU, memory, kernel, Docker)."""
from __future__ import annotations

import os
import platform
import re
from pathlib import Path



def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo -> {field: bytes}."""
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key.strip()] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return out


def parse_cpu_model(text: str) -> str:
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Hardware", "cpu model"):
            return " ".join(value.split())
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, str]:
    from importlib.metadata import version
    info = {"cores": str(os.cpu_count() or "?"), "kernel": f"{platform.system()} {platform.release()}",
            "python": f"{platform.python_version()} (bare processes)"}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        info["cpu"] = parse_cpu_model(cpuinfo)
        mhz = re.search(r"^cpu MHz\s*:\s*([0-9.]+)", cpuinfo, re.M)
        if mhz:
            info["cpu"] += f" at {float(mhz.group(1)):.0f} MHz"
        if re.search(r"^flags\s*:.*\bhypervisor\b", cpuinfo, re.M):
            info["cpu"] += " (virtual machine)"
    except OSError:
        info["cpu"] = platform.processor() or platform.machine()
    try:
        total = parse_meminfo(Path("/proc/meminfo").read_text()).get("MemTotal", 0)
        info["memory"] = f"{total / 1024 ** 3:.1f} GiB"
    except OSError:
        info["memory"] = "?"
    info["docker"] = "?"
    info["flwr"] = f"{version('flwr')} (host virtualenv)"
    try:
        import docker
        client = docker.from_env()
        info["docker"] = client.version().get("Version", "?")
        ctr = client.containers.list(filters={"label": "com.docker.compose.service=superlink"})[0]
        out = ctr.exec_run(["python3", "-c", "import flwr, sys; print(flwr.__version__, sys.version.split()[0])"])
        if out.exit_code == 0:
            flwr_v, py_v = out.output.decode().split()
            info["flwr"] += f", {flwr_v} (images)"
            info["python"] += f", {py_v} (images)"
    except Exception:  # noqa: BLE001 - informational only
        pass
    return info


def mem_available() -> int | None:
    try:
        return parse_meminfo(Path("/proc/meminfo").read_text()).get("MemAvailable")
    except OSError:
        return None


def total_memory() -> int | None:
    """The host's MemTotal in bytes (None where /proc/meminfo is missing)."""
    try:
        return parse_meminfo(Path("/proc/meminfo").read_text()).get("MemTotal")
    except OSError:
        return None
