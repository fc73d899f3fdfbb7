"""One `docker compose config` per `invoke up`: the model read with every profile it may
need, cut down per step by `stack.for_profiles`. The cut must be what Compose itself
gives for those profiles (needs the docker CLI and its Compose plugin, no engine)."""
from __future__ import annotations

import json

import pytest
import yaml

from fedops import config, images, paths, stack, vendor
from test_gpu_profile import _compose_available, merged

pytestmark = pytest.mark.skipif(not _compose_available(),
                                reason="needs the docker CLI with the Compose v2 plugin")

ALL = [*vendor.PROFILES, *images.BUILD_ONLY_PROFILES]


def canonical(model: dict) -> str:
    return json.dumps({k: v for k, v in model.items() if k != "_files"}, sort_keys=True)


@pytest.fixture(scope="module")
def fed() -> config.Federation:
    return config.parse(yaml.safe_load(paths.CONFIG.read_text()))


@pytest.mark.parametrize("base", [[], ["gpu"]], ids=["cpu", "gpu"])
def test_the_cut_is_what_compose_gives_for_each_profile_set(fed, tmp_path, base):
    full = merged(fed, tmp_path, [*base, *ALL])
    for extra in ([], [vendor.PROFILES[0]], list(images.BUILD_ONLY_PROFILES), ALL):
        wanted = merged(fed, tmp_path, [*base, *extra])
        assert canonical(stack.for_profiles(full, [*base, *extra])) == canonical(wanted), extra


def test_the_cut_drops_services_and_what_only_they_use():
    full = {"services": {
                "db": {"volumes": [{"type": "volume", "source": "data"}], "secrets": [{"source": "pw"}]},
                "viz": {"profiles": ["viz"], "volumes": [{"type": "volume", "source": "viz-data"},
                                                          {"type": "bind", "source": "/etc"}],
                        "build": {"secrets": [{"source": "ca"}]}}},
            "volumes": {"data": {}, "viz-data": {}}, "secrets": {"pw": {}, "ca": {}}, "networks": {"n": {}}}
    cut = stack.for_profiles(full, [])
    assert list(cut["services"]) == ["db"]
    assert list(cut["volumes"]) == ["data"] and list(cut["secrets"]) == ["pw"]
    assert cut["networks"] == {"n": {}}
    assert stack.for_profiles(full, ["viz"])["secrets"] == {"pw": {}, "ca": {}}
