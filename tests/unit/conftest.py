import copy

import pytest
import yaml

from fedops import config, paths


@pytest.fixture
def raw():
    """The committed federation.yaml as a dict (a fresh copy per test)."""
    return copy.deepcopy(yaml.safe_load(paths.CONFIG.read_text()))


@pytest.fixture
def fed(raw):
    return config.parse(raw)
