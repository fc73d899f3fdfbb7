"""services/prometheus: the rendered configuration follows the federation, settings are
validated, and every alert rule has a promtool test case (promtool itself runs at image
build and in tests/stack/test_monitoring.py)."""
from pathlib import Path

import pytest
import yaml

from testcerts import load_entrypoint

SERVICE = Path(__file__).resolve().parents[1]
FED = {"domain": "fl.test",
       "hostnames": {"landing": "fl.test", "auth": "auth.fl.test", "prometheus": "prometheus.fl.test"},
       "organisations": [{"name": "alpha"}, {"name": "bravo"}]}


@pytest.fixture
def entry(monkeypatch):
    monkeypatch.setenv("FL_TEMPLATES", str(SERVICE))
    return load_entrypoint(SERVICE / "entrypoint.py", "prometheus_entry")


def rendered(entry, **env) -> dict:
    return yaml.safe_load(entry.render_config(FED, entry.settings(env), share=SERVICE, tls=Path("/etc/fl/tls")))


def test_every_public_host_is_probed_through_the_edge(entry):
    jobs = {j["job_name"]: j for j in rendered(entry)["scrape_configs"]}
    edge = jobs["edge"]
    targets = sorted(t for sc in edge["static_configs"] for t in sc["targets"])
    assert targets == sorted(f"https://{h}/" for h in FED["hostnames"].values())
    assert edge["params"] == {"module": ["edge_https"]}
    assert {"target_label": "__address__", "replacement": "blackbox-exporter:9115"} in edge["relabel_configs"]


def test_services_are_found_by_name_and_ctlgate_over_verified_tls(entry):
    jobs = {j["job_name"]: j for j in rendered(entry)["scrape_configs"]}
    assert {"prometheus", "alertmanager", "node", "nginx", "postgres", "blackbox", "ctlgate", "dcgm",
            "fl", "edge", "keycloak"} == set(jobs)
    assert jobs["ctlgate"]["scheme"] == "https"
    assert jobs["ctlgate"]["tls_config"] == {"ca_file": "/etc/fl/tls/ca.crt", "server_name": "ctlgate"}
    assert jobs["node"]["dns_sd_configs"][0]["names"] == ["node-exporter"]
    # Keycloak through the edge's internal listener, never directly.
    assert jobs["keycloak"]["static_configs"][0]["targets"] == ["nginx:8080"]
    assert jobs["keycloak"]["metrics_path"] == "/keycloak/metrics"


def test_rules_and_alertmanager_are_wired(entry):
    cfg = rendered(entry, FL_PROMETHEUS_SCRAPE_INTERVAL="15s")
    assert cfg["global"]["scrape_interval"] == "15s"
    assert cfg["global"]["external_labels"] == {"federation": "fl.test"}
    assert cfg["rule_files"] == [f"{SERVICE}/rules/*.yml"]
    assert cfg["alerting"]["alertmanagers"][0]["dns_sd_configs"][0]["names"] == ["alertmanager"]


def test_retention_reaches_the_command_line(entry):
    argv = entry.command(entry.settings({"FL_PROMETHEUS_RETENTION": "30d",
                                         "FL_PROMETHEUS_RETENTION_SIZE": "5GB"}))
    assert "--storage.tsdb.retention.time=30d" in argv
    assert "--storage.tsdb.retention.size=5GB" in argv
    assert "--storage.tsdb.path=/prometheus" in argv
    assert not any(a.startswith("--storage.tsdb.retention.size") for a in entry.command(entry.settings({})))


@pytest.mark.parametrize("key,value", [("FL_PROMETHEUS_RETENTION", "two weeks"),
                                       ("FL_PROMETHEUS_SCRAPE_INTERVAL", "30"),
                                       ("FL_PROMETHEUS_RETENTION_SIZE", "5 gigs"),
                                       ("FL_PROMETHEUS_EXTERNAL_URL", "prometheus.fl.test")])
def test_bad_settings_fail_naming_the_key(entry, capsys, key, value):
    with pytest.raises(SystemExit) as exit_:
        entry.settings({key: value})
    assert exit_.value.code == 2
    assert key in capsys.readouterr().err


def test_a_missing_federation_file_says_how_to_get_it(entry, tmp_path, capsys):
    with pytest.raises(SystemExit):
        entry.load_federation(tmp_path / "federation.json")
    assert "invoke up" in capsys.readouterr().err


def test_every_alert_rule_has_a_promtool_case():
    rules = yaml.safe_load((SERVICE / "rules" / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tested = set()
    for path in (SERVICE / "rules-tests").glob("*.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            tested |= {t["alertname"] for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert alerts - tested == set(), "alert rules without a firing promtool case"


def test_the_federation_console_and_its_library_are_served(entry):
    """The console flags point at the shipped folders (Debian's /etc/prometheus ones are
    empty), and every template a console calls is defined in a shipped library."""
    import re
    argv = entry.command(entry.settings({}))
    flags = dict(a.split("=", 1) for a in argv if a.startswith("--web.console."))
    consoles, libraries = Path(flags["--web.console.templates"]), Path(flags["--web.console.libraries"])
    assert (consoles / "federation.html").is_file()
    defined = {m for lib in libraries.glob("*.lib") for m in re.findall(r'{{ define "([^"]+)"', lib.read_text())}
    for page in consoles.glob("*.html"):
        called = set(re.findall(r'{{ template "([^"]+)"', page.read_text()))
        assert called and called <= defined, (page.name, called - defined)
