"""Unit tests are hermetic: no Docker, no network, none of the developer's files or
environment. Every test runs against an empty instance folder of its own (the paths
the tasks use: fedops/paths.py), with the FL_*, COMPOSE_* and IMAGE_* variables of the
calling shell removed, so `pytest tests/unit` gives the same result in any checkout,
in any venv with the project installed."""
import copy
import os

import pytest
import yaml

from fedops import compose, config, paths


@pytest.fixture(autouse=True)
def hermetic(tmp_path_factory, monkeypatch):
    for key in list(os.environ):
        if key.startswith(compose.ENV_PREFIXES) or key in ("DOCKER_HOST", "DOCKER_CONTEXT"):
            monkeypatch.delenv(key)
    instance = tmp_path_factory.mktemp("instance")
    monkeypatch.setenv(paths.INSTANCE_ENV, str(instance))
    # an engine that is not there: a unit test that reached Docker would fail loudly
    monkeypatch.setenv("DOCKER_HOST", f"unix://{instance}/no-docker-in-unit-tests.sock")
    yield instance


@pytest.fixture
def raw():
    """The committed federation.yaml as a dict (a fresh copy per test)."""
    return copy.deepcopy(yaml.safe_load(paths.CONFIG.read_text()))


@pytest.fixture
def fed(raw):
    return config.parse(raw)
