"""PostgreSQL (task list 3.1): TLS only, scram only, databases per consumer, persistence."""
import psycopg
import pytest


def connect(stack, user="keycloak", db=None, password=None, sslmode="verify-full", **kw):
    return psycopg.connect(host="localhost", port=int(stack.setting("FL_POSTGRES_PORT")),
                           user=user, dbname=db or user,
                           password=password if password is not None else stack.secret(f"{user}_db_password"),
                           sslmode=sslmode, sslrootcert=str(stack.ca), connect_timeout=10, **kw)


def test_postgres_is_healthy(stack):
    out = stack.compose("ps", "--format", "{{.Health}}", "postgres").stdout.strip()
    assert out == "healthy"


@pytest.mark.parametrize("user", ["keycloak", "jupyterhub", "grafana", "flower"])
def test_each_consumer_reaches_its_database_over_verified_tls(stack, user):
    with connect(stack, user) as conn:
        row = conn.execute("SELECT current_user, current_database(), ssl, version "
                           "FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert row[0] == user and row[1] == user and row[2] is True
    assert row[3] in ("TLSv1.2", "TLSv1.3")


def test_server_certificate_is_checked_against_the_project_ca(stack, tmp_path):
    other = tmp_path / "other-ca.crt"
    # the system bundle does not contain the project CA: verify-full must refuse
    other.write_text(open("/etc/ssl/certs/ca-certificates.crt").read())
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(host="localhost", port=int(stack.setting("FL_POSTGRES_PORT")), user="keycloak",
                        dbname="keycloak", password=stack.secret("keycloak_db_password"),
                        sslmode="verify-full", sslrootcert=str(other), connect_timeout=10)


def test_clear_text_connection_is_refused(stack):
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        connect(stack, sslmode="disable")


def test_wrong_password_is_refused(stack):
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(stack, password="not-the-password")


def test_a_role_cannot_open_another_consumers_database(stack):
    with pytest.raises(psycopg.OperationalError, match="rejects connection"):
        connect(stack, user="keycloak", db="grafana")


def test_authentication_methods_are_scram_only(stack):
    with connect(stack, "postgres", password=stack.secret("postgres_password")) as conn:
        rules = conn.execute("SELECT type, auth_method FROM pg_hba_file_rules").fetchall()
        dbs = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
        enc = conn.execute("SHOW password_encryption").fetchone()[0]
    methods = {m for _, m in rules}
    assert methods <= {"peer", "scram-sha-256", "reject"}
    assert ("hostnossl", "reject") in rules
    assert {"keycloak", "jupyterhub", "grafana", "flower"} <= dbs
    assert enc == "scram-sha-256"
