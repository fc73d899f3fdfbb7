"""services/alertmanager: routes by severity, webhook receivers from the settings,
settings validated. amtool checks the rendered file here when it is on the host's PATH
is not assumed: the container checks it at every start (tests/stack/test_monitoring.py)."""
from pathlib import Path

import pytest
import yaml

from testcerts import load_entrypoint

SERVICE = Path(__file__).resolve().parents[1]


@pytest.fixture
def entry(monkeypatch):
    monkeypatch.setenv("FL_TEMPLATES", str(SERVICE))
    return load_entrypoint(SERVICE / "entrypoint.py", "alertmanager_entry")


def rendered(entry, **env) -> dict:
    return yaml.safe_load(entry.render_config(entry.settings(env), share=SERVICE))


def test_routes_by_severity_to_their_receivers(entry):
    cfg = rendered(entry, FL_ALERT_WEBHOOK_URL="http://hook:8080/all",
                   FL_ALERT_WEBHOOK_URL_CRITICAL="http://pager:9000/x,http://hook:8080/critical")
    routes = {r["receiver"]: r["matchers"] for r in cfg["route"]["routes"]}
    assert routes == {s: [f'severity="{s}"'] for s in ("critical", "warning", "info")}
    receivers = {r["name"]: [w["url"] for w in r.get("webhook_configs", [])] for r in cfg["receivers"]}
    assert receivers == {"default": ["http://hook:8080/all"], "warning": ["http://hook:8080/all"],
                         "info": ["http://hook:8080/all"],
                         "critical": ["http://pager:9000/x", "http://hook:8080/critical"]}
    assert all(w["send_resolved"] for r in cfg["receivers"] for w in r.get("webhook_configs", []))


def test_without_webhooks_alerts_stay_in_alertmanager(entry):
    cfg = rendered(entry)
    assert all("webhook_configs" not in r for r in cfg["receivers"])
    assert cfg["route"]["group_wait"] == "30s"


def test_timings_and_external_url(entry):
    values = entry.settings({"FL_ALERT_GROUP_WAIT": "5s", "FL_ALERTMANAGER_EXTERNAL_URL": "https://alertmanager.fl.test"})
    assert yaml.safe_load(entry.render_config(values, share=SERVICE))["route"]["group_wait"] == "5s"
    argv = entry.command(values)
    assert "--web.external-url=https://alertmanager.fl.test" in argv
    assert "--cluster.listen-address=" in argv and "--storage.path=/alertmanager" in argv


@pytest.mark.parametrize("key,value", [("FL_ALERT_WEBHOOK_URL", "hook:8080"),
                                       ("FL_ALERT_WEBHOOK_URL_WARNING", "ftp://x/y"),
                                       ("FL_ALERT_GROUP_WAIT", "soon")])
def test_bad_settings_fail_naming_the_key(entry, capsys, key, value):
    with pytest.raises(SystemExit) as exit_:
        entry.settings({key: value})
    assert exit_.value.code == 2
    assert key in capsys.readouterr().err
