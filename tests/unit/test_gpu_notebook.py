"""The GPU profile's notebook servers (compose.gpu.yml): the notebook image's CUDA
variant, the hub asking for GPUs and the Docker API proxy allowing GPU requests, checked
on the merged Compose model (`docker compose config`: no engine, no GPU)."""
from __future__ import annotations

import pytest
import yaml

from fedops import config, images, paths
from test_gpu_profile import _compose_available, expected_image, merged

pytestmark = pytest.mark.skipif(not _compose_available(),
                                reason="needs the docker CLI with the Compose v2 plugin")


@pytest.fixture(scope="module")
def fed() -> config.Federation:
    return config.parse(yaml.safe_load(paths.CONFIG.read_text()))


@pytest.fixture(scope="module")
def gpu(fed, tmp_path_factory) -> dict:
    return merged(fed, tmp_path_factory.mktemp("gpu-nb"), ["gpu", "notebook"])


@pytest.fixture(scope="module")
def cpu(fed, tmp_path_factory) -> dict:
    return merged(fed, tmp_path_factory.mktemp("cpu-nb"), ["notebook"])


def test_the_gpu_profile_builds_the_notebook_images_cuda_variant(gpu, cpu):
    nb = gpu["services"]["notebook"]
    assert nb["image"] == expected_image("notebook-gpu")
    assert nb["build"]["args"]["FLAVOUR"] == "gpu" and "BASE_IMAGE" in nb["build"]["args"]
    assert nb["build"]["dockerfile"] == "services/notebook/Dockerfile"     # merged, not replaced
    assert nb["profiles"] == ["notebook"]                                  # built, never started by Compose
    assert cpu["services"]["notebook"]["image"] == expected_image("notebook")
    assert "FLAVOUR" not in cpu["services"]["notebook"]["build"].get("args", {})


def test_the_hub_spawns_the_gpu_image_with_gpus_and_the_proxy_allows_only_that(gpu, cpu):
    hub, proxy = gpu["services"]["jupyterhub"]["environment"], gpu["services"]["dockerproxy"]["environment"]
    assert hub["FL_NOTEBOOK_IMAGE"] == expected_image("notebook-gpu") and hub["FL_NOTEBOOK_GPUS"] == "1"
    assert proxy["FL_NOTEBOOK_IMAGES"] == expected_image("notebook-gpu") and proxy["FL_NOTEBOOK_GPU"] == "1"
    cpu_hub, cpu_proxy = cpu["services"]["jupyterhub"]["environment"], cpu["services"]["dockerproxy"]["environment"]
    assert "FL_NOTEBOOK_GPUS" not in cpu_hub and "FL_NOTEBOOK_GPU" not in cpu_proxy
    assert cpu_proxy["FL_NOTEBOOK_IMAGES"] == expected_image("notebook")


def test_gpus_per_notebook_are_configurable(fed, tmp_path):
    model = merged(fed, tmp_path, ["gpu", "notebook"], env={"FL_GPUS_PER_NOTEBOOK": "all"})
    assert model["services"]["jupyterhub"]["environment"]["FL_NOTEBOOK_GPUS"] == "all"


def test_the_notebook_context_holds_the_supernodes_torch_pins_and_no_other_service():
    sent = {str(f.relative_to(paths.ROOT)) for f in images.context_files(paths.ROOT)}
    assert "services/supernode/requirements-gpu.txt" in sent and "services/notebook/Dockerfile" in sent
    assert {f.split("/")[1] for f in sent if f.startswith("services/")} == {"notebook", "supernode"}
    assert {f for f in sent if f.startswith("services/supernode/")} == {"services/supernode/requirements-gpu.txt"}
