"""Nothing is lost on `invoke down` + `invoke up` (the whole test deployment restarts)."""
import json
import secrets

import oidc
from fedops import federation
from stackenv import completed_run, connect, wait_all_online
from kcadmin import admin_client, user
import workspace
from test_notebooks import docker_exec


def test_identity_export_writes_the_live_realm(stack, tmp_path):
    out = tmp_path / "realm.json"
    stack.invoke("identity.export", "--output", str(out))
    realm = json.loads(out.read_text())
    assert realm["realm"] == "flowerfl"
    assert {u["username"] for u in realm["users"]} >= {u.username for u in stack.fed.users}
    assert {"flwr-cli", "jupyterhub", "grafana", "ctlgate"} <= {c["clientId"] for c in realm["clients"]}


def test_data_survives_down_and_up(stack):
    # PostgreSQL: a row; Keycloak: a change made in Keycloak itself (must not be clobbered
    # by the realm import on the next start).
    with connect(stack, "flower") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS persistence_probe (id serial primary key, note text)")
        conn.execute("INSERT INTO persistence_probe (note) VALUES ('before restart')")
        count = conn.execute("SELECT count(*) FROM persistence_probe").fetchone()[0]
    with admin_client(stack) as admin:
        researcher = user(admin, "researcher")
        researcher["lastName"] = "Changed-In-Keycloak"
        assert admin.put(f"/users/{researcher['id']}", json=researcher).status_code == 204

    # A notebook workspace: a file written in the user's server (`down` removes the
    # server, never its home volume).
    marker = secrets.token_hex(8)
    workspace.write(stack, "observer", "persist-down-up.txt", marker)

    completed_run()
    runs_before = {r["run-id"] for r in federation.runs()}
    nodes_before = {n.name: n.node_id for n in federation.nodes() if n.status != "unregistered"}

    stack.invoke("down")
    assert stack.compose("ps", "-q").stdout.strip() == ""
    stack.invoke("up", "--no-build")

    with connect(stack, "flower") as conn:
        assert conn.execute("SELECT count(*) FROM persistence_probe").fetchone()[0] == count
    with admin_client(stack) as admin:
        assert user(admin, "researcher")["lastName"] == "Changed-In-Keycloak"
    # The SuperLink's SQLite volume: earlier runs and the registered SuperNode keys (same
    # node ids, no re-registration), and every site back online by itself.
    assert runs_before and runs_before <= {r["run-id"] for r in federation.runs()}
    assert {n.name: n.node_id for n in federation.nodes() if n.status != "unregistered"} == nodes_before
    wait_all_online(stack)
    passwords = json.loads(stack.secret("keycloak_users"))
    tokens = oidc.device_flow_tokens(stack, "researcher", passwords["researcher"])
    assert tokens["access_token"]
    # The user signs in again, starts a server and finds the file.
    server = workspace.start(stack, "observer")
    assert docker_exec(server, "cat", "/home/jovyan/work/persist-down-up.txt").stdout == marker
