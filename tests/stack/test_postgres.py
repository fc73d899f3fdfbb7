"""PostgreSQL (task list 3.1): TLS only, scram only, databases per consumer, the
superuser only inside its container. From this machine through the administration port
(the edge passes it through)."""
import psycopg
import pytest

from stackenv import connect


def test_postgres_is_healthy(stack):
    from fedops import stack as stack_ops
    stack_ops.wait_healthy(["postgres"], timeout=60)
    assert stack.exec("postgres", "pg_isready -h /run/postgresql -U postgres").returncode == 0


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


def superuser_sql(stack, sql: str) -> list[list[str]]:
    """As the superuser over the local socket inside the container (the only way)."""
    out = stack.compose("exec", "-T", "postgres", "psql", "-X", "-At", "-F", "|", "-h", "/run/postgresql",
                        "-U", "postgres", "-d", "postgres", "-c", sql).stdout
    return [line.split("|") for line in out.splitlines() if line]


def test_the_superuser_is_refused_over_tcp_even_with_its_password(stack):
    with pytest.raises(psycopg.OperationalError, match='rejects connection for host .*user "postgres"'):
        connect(stack, "postgres", db="postgres", password=stack.secret("postgres_password"))


def test_authentication_methods_are_scram_only(stack):
    rules = [tuple(r) for r in superuser_sql(stack, "SELECT type, user_name, auth_method FROM pg_hba_file_rules")]
    dbs = {r[0] for r in superuser_sql(stack, "SELECT datname FROM pg_database")}
    enc = superuser_sql(stack, "SHOW password_encryption")[0][0]
    assert {m for _, _, m in rules} <= {"peer", "scram-sha-256", "reject"}
    assert ("hostnossl", "{all}", "reject") in rules
    # the superuser: peer on the local socket, and every TCP rule for it rejects
    assert [m for t, u, m in rules if u == "{postgres}"] == ["peer", "reject", "reject"]
    assert {"keycloak", "jupyterhub", "grafana", "flower"} <= dbs
    assert enc == "scram-sha-256"
