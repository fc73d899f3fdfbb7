"""The GPU profile: compose.gpu.yml (the DCGM exporter) and the per-organisation overlay
rendered from services/supernode/compose.gpu.yml.j2, checked on the merged Compose model
(`docker compose ... config`: needs the docker CLI and its Compose plugin, no engine and
no GPU). Files are rendered into a temporary instance folder, never into the checkout."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from fedops import compose, config, paths, render


def _compose_available() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(not _compose_available(),
                                reason="needs the docker CLI with the Compose v2 plugin")


def merged(fed: config.Federation, folder: Path, profiles=(), env: dict | None = None) -> dict:
    """The merged Compose model for this federation, as fedops.compose.argv builds it,
    with `folder` as the instance (its build/ rendered by fedops.render, as `invoke up`
    does) and none of the caller's FL_*/COMPOSE_* variables."""
    folder.mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith(compose.ENV_PREFIXES):
                mp.delenv(key)
        mp.setenv(paths.INSTANCE_ENV, str(folder))
        for key, value in (env or {}).items():
            mp.setenv(key, value)
        render.render_all(fed)
        argv = compose.argv(profiles)
        files = compose.files(profiles)
        out = subprocess.run([*argv, "config", "--format", "json"], capture_output=True, text=True,
                             env=compose.environment())
    assert out.returncode == 0, out.stderr
    model = json.loads(out.stdout)
    model["_files"] = files
    return model


def supernodes(model: dict) -> dict[str, dict]:
    return {n: s for n, s in model["services"].items() if n.startswith("supernode-")}


def devices(service: dict) -> list[dict]:
    return (((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}) \
        .get("devices") or []


def count(device: dict):
    """A device count as a number, or "all" (Compose 2.26 prints it as -1)."""
    value = device.get("count")
    return "all" if value in (-1, "-1", "all") else int(value)


def expected_image(name: str) -> str:
    s = compose.settings()
    return f"{s.get('IMAGE_PREFIX', 'flfed')}/{name}:{s.get('IMAGE_TAG', 'latest')}"


@pytest.fixture(scope="module")
def default_fed() -> config.Federation:
    return config.parse(yaml.safe_load(paths.CONFIG.read_text()))


@pytest.fixture(scope="module")
def gpu_model(default_fed, tmp_path_factory) -> dict:
    return merged(default_fed, tmp_path_factory.mktemp("gpu"), ["gpu"])


@pytest.fixture(scope="module")
def cpu_model(default_fed, tmp_path_factory) -> dict:
    return merged(default_fed, tmp_path_factory.mktemp("cpu"), [])


# ------------------------------------------------------------------ which files
def test_gpu_files_only_with_the_gpu_profile(gpu_model, cpu_model):
    names = [p.name for p in gpu_model["_files"]]
    assert names == ["docker-compose.yml", "compose.organisations.yml", "compose.gpu.yml",
                     "compose.gpu-sites.yml"]
    assert [p.name for p in cpu_model["_files"]] == ["docker-compose.yml", "compose.organisations.yml"]


def test_render_all_writes_the_gpu_sites_overlay(default_fed, tmp_path):
    changed = render.render_all(default_fed, build=tmp_path)
    assert "compose.gpu-sites.yml" in changed
    text = (tmp_path / "compose.gpu-sites.yml").read_text()
    for org in default_fed.organisations:
        assert f"supernode-{org.name}:" in text
    assert render.render_all(default_fed, build=tmp_path) == []   # idempotent


# ------------------------------------------------------------------ SuperNodes
def test_every_supernode_reserves_an_nvidia_gpu(gpu_model, default_fed):
    nodes = supernodes(gpu_model)
    assert set(nodes) == {o.service for o in default_fed.organisations}
    for name, svc in nodes.items():
        devs = devices(svc)
        assert len(devs) == 1, name
        assert devs[0]["driver"] == "nvidia"
        assert devs[0]["capabilities"] == ["gpu"]
        assert count(devs[0]) == "all" or count(devs[0]) >= 1


def test_supernodes_use_the_gpu_image_variant(gpu_model):
    for name, svc in supernodes(gpu_model).items():
        assert svc["image"] == expected_image("supernode-gpu"), name
        assert svc["build"]["args"]["FLAVOUR"] == "gpu"
        # merged into the site's build, not replacing it
        assert svc["build"]["context"].endswith("services/supernode")
        assert "BASE_IMAGE" in svc["build"]["args"]
        assert [s["source"] for s in svc["build"]["secrets"]] == ["extra_ca"]


def test_gpu_supernodes_stay_hardened_and_wired(gpu_model):
    for name, svc in supernodes(gpu_model).items():
        org = name.removeprefix("supernode-")
        assert svc["read_only"] is True
        assert svc["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in svc["security_opt"]
        assert svc["user"] == "10050:10050"
        assert svc["network_mode"] == f"service:siteproxy-{org}"
        assert int(svc["mem_limit"]) >= 2 * 1024**3   # CUDA needs more than the CPU site's 1g


def test_gpu_count_is_configurable(default_fed, tmp_path):
    for value, expected in (("all", "all"), ("2", 2)):
        model = merged(default_fed, tmp_path / value, ["gpu"], env={"FL_GPUS_PER_SUPERNODE": value})
        for svc in supernodes(model).values():
            assert count(devices(svc)[0]) == expected


def test_a_fourth_organisation_gets_a_gpu_supernode(raw, tmp_path):
    raw["organisations"].append({"name": "delta", "display_name": "Delta Laboratory"})
    fed = config.parse(raw)
    model = merged(fed, tmp_path, ["gpu"])
    nodes = supernodes(model)
    assert len(nodes) == 4 and "supernode-delta" in nodes
    assert all(devices(s) and devices(s)[0]["driver"] == "nvidia" for s in nodes.values())
    assert nodes["supernode-delta"]["image"] == expected_image("supernode-gpu")
    assert nodes["supernode-delta"]["environment"]["PARTITION_ID"] == "3"
    assert nodes["supernode-delta"]["environment"]["NUM_PARTITIONS"] == "4"
    assert "siteproxy-delta" in model["services"]


# ------------------------------------------------------------------ DCGM
def test_dcgm_only_with_the_gpu_profile(gpu_model, cpu_model):
    assert "dcgm" in gpu_model["services"]
    assert "dcgm" not in cpu_model["services"]


def test_dcgm_on_the_monitoring_network_with_its_metrics_port(gpu_model):
    dcgm = gpu_model["services"]["dcgm"]
    assert dcgm["profiles"] == ["gpu"]
    assert list(dcgm["networks"]) == ["fl-monitoring-network"]
    assert "9400" in [str(p) for p in dcgm.get("expose", [])]
    assert not dcgm.get("ports"), "DCGM metrics are scraped on the monitoring network, not published"
    assert dcgm["build"]["context"].endswith("services/dcgm")
    assert dcgm["image"] == expected_image("dcgm")
    assert dcgm["healthcheck"]["test"][0] == "CMD"


def test_dcgm_reserves_all_gpus(gpu_model):
    devs = devices(gpu_model["services"]["dcgm"])
    assert len(devs) == 1
    assert devs[0]["driver"] == "nvidia" and devs[0]["capabilities"] == ["gpu"]
    assert count(devs[0]) == "all"


def test_dcgm_is_hardened(gpu_model):
    dcgm = gpu_model["services"]["dcgm"]
    assert dcgm["read_only"] is True
    assert dcgm["cap_drop"] == ["ALL"]
    assert not dcgm.get("cap_add") and not dcgm.get("privileged")
    assert "no-new-privileges:true" in dcgm["security_opt"]
    assert dcgm["restart"] == "unless-stopped"
    assert dcgm.get("mem_limit")


# ------------------------------------------------------------------ without the profile
def test_no_device_reservations_without_the_gpu_profile(cpu_model):
    for name, svc in cpu_model["services"].items():
        assert not devices(svc), name


def test_cpu_supernodes_keep_the_cpu_image(cpu_model):
    for name, svc in supernodes(cpu_model).items():
        assert svc["image"] == expected_image("supernode"), name
        assert "FLAVOUR" not in svc["build"].get("args", {})   # the Dockerfile's default: cpu


# ------------------------------------------------------------------ the image
def _instructions(dockerfile: Path) -> list[str]:
    """Dockerfile instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"^\s*#.*\n", "", dockerfile.read_text(), flags=re.M)
    return [re.sub(r"\s+", " ", i).strip() for i in re.sub(r"\\\n", " ", text).splitlines() if i.strip()]


def test_the_shared_pip_layer_is_unchanged_by_the_gpu_variant():
    """Everything up to the big pip layer is identical to the SuperLink's (they share it);
    the FLAVOUR build arg is declared only after it."""
    node = _instructions(paths.SERVICES_DIR / "supernode" / "Dockerfile")
    link = _instructions(paths.SERVICES_DIR / "superlink" / "Dockerfile")
    big = next(i for i, line in enumerate(link) if "flwr-requirements.txt" in line and line.startswith("RUN"))
    assert node[:big + 1] == link[:big + 1]
    flavour = next(i for i, line in enumerate(node) if line.startswith("ARG FLAVOUR"))
    assert flavour > big
    assert node[flavour] == "ARG FLAVOUR=cpu"


def test_gpu_requirements_are_pinned_and_do_not_move_the_shared_pins():
    def pins(path: Path) -> dict[str, str]:
        out = {}
        for line in path.read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                name, sep, version = line.partition("==")
                assert sep and version, f"{path.name}: {line!r} is not pinned with =="
                out[name.lower().replace("_", "-")] = version
        return out
    gpu = pins(paths.SERVICES_DIR / "supernode" / "requirements-gpu.txt")
    base = pins(paths.SERVICES_DIR / "supernode" / "requirements.txt")
    assert "torch" in gpu
    assert not set(gpu) & set(base), "a package pinned twice: requirements.txt is the constraint"
    text = (paths.SERVICES_DIR / "supernode" / "requirements-gpu.txt").read_text()
    assert "://" not in text and "--index-url" not in text and "--extra-index-url" not in text
