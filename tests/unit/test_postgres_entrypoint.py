"""services/postgres/entrypoint.py's pure parts: pg_hba and the reconcile SQL."""

import pytest

from fedops import paths
from testcerts import load_entrypoint

SERVICE = paths.SERVICES_DIR / "postgres"


@pytest.fixture
def entry(monkeypatch):
    monkeypatch.setenv("FL_TEMPLATES", str(SERVICE))
    return load_entrypoint(SERVICE / "entrypoint.py", "pg_entry")


def test_pg_hba_is_ssl_and_scram_only(entry):
    nets = entry.parse_networks("fl-services-network=172.20.0.0/16,fl-monitoring-network=172.22.0.0/16")
    hba = entry.render("pg_hba.conf.j2", networks=nets)
    rows = [l.split() for l in hba.splitlines() if l.strip() and not l.startswith("#")]
    assert ["hostnossl", "all", "all", "0.0.0.0/0", "reject"] in rows
    methods = {r[-1] for r in rows}
    assert "trust" not in methods and "md5" not in methods and "password" not in methods
    for r in rows:
        if r[0] == "host" or r[0] == "hostnossl":
            assert r[-1] == "reject"
        if r[0] == "hostssl":
            assert r[-1] == "scram-sha-256" and r[3] in ("172.20.0.0/16", "172.22.0.0/16")


def test_bad_network_spec_fails_clearly(entry, capsys):
    with pytest.raises(SystemExit) as exit_:
        entry.parse_networks("fl-services-network=not-a-cidr")
    assert exit_.value.code == 2
    assert "FL_CLIENT_NETWORKS" in capsys.readouterr().err


def test_reconcile_sql_is_idempotent_and_quotes_passwords(entry):
    pw = {db: f"p'{db}" for db in entry.DATABASES}
    pw["postgres"] = "super'secret"
    sql = entry.reconcile_sql(pw)
    for db in entry.DATABASES:
        assert f"WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{db}')" in sql
        assert f"PASSWORD 'p''{db}'" in sql
        assert f"REVOKE ALL ON DATABASE {db} FROM PUBLIC" in sql
    assert "PASSWORD 'super''secret'" in sql


def test_missing_secret_names_the_file_and_the_task(entry, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(entry, "SECRETS", tmp_path)
    monkeypatch.delenv("KEYCLOAK_DB_PASSWORD", raising=False)
    with pytest.raises(SystemExit):
        entry.secret("keycloak_db_password")
    err = capsys.readouterr().err
    assert "keycloak_db_password" in err and "invoke secrets.generate" in err
