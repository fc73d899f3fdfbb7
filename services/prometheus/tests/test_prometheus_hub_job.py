"""services/prometheus: JupyterHub's /hub/metrics is scraped through the edge with the
hub service token (a Compose secret), TLS verified against the project CA."""
from pathlib import Path

import pytest
import yaml

from testcerts import load_entrypoint

SERVICE = Path(__file__).resolve().parents[1]
FED = {"domain": "fl.test",
       "hostnames": {"landing": "fl.test", "auth": "auth.fl.test", "hub": "hub.fl.test"},
       "organisations": [{"name": "alpha"}]}


@pytest.fixture
def entry(monkeypatch):
    monkeypatch.setenv("FL_TEMPLATES", str(SERVICE))
    return load_entrypoint(SERVICE / "entrypoint.py", "prometheus_entry_hub")


def test_the_hub_is_scraped_through_the_edge_with_its_metrics_token(entry):
    config = yaml.safe_load(entry.render_config(FED, entry.settings({}), share=SERVICE, tls=Path("/etc/fl/tls")))
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "jupyterhub"]
    assert job["scheme"] == "https" and job["metrics_path"] == "/hub/metrics"
    assert job["static_configs"] == [{"targets": ["hub.fl.test:443"], "labels": {"instance": "jupyterhub"}}]
    assert job["tls_config"] == {"ca_file": "/etc/fl/tls/ca.crt", "server_name": "hub.fl.test"}
    assert job["authorization"] == {"type": "Bearer",
                                    "credentials_file": "/run/secrets/jupyterhub_metrics_token"}


def test_the_secret_it_reads_is_the_one_compose_mounts():
    compose = yaml.safe_load((SERVICE.parents[1] / "docker-compose.yml").read_text())
    assert "jupyterhub_metrics_token" in compose["services"]["prometheus"]["secrets"]
    assert "jupyterhub_metrics_token" in compose["services"]["jupyterhub"]["secrets"]
    assert compose["secrets"]["jupyterhub_metrics_token"]["file"].endswith("/secrets/jupyterhub_metrics_token")
