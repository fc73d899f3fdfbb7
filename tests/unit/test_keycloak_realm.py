"""services/keycloak: the realm and Keycloak's environment, rendered from the same
federation.json the tasks write (no Docker; the stack tests run Keycloak)."""
import json

import pytest
import yaml

from fedops import config, paths, render
from testcerts import load_entrypoint

SECRETS = {"keycloak_users": {"researcher": "r" * 16, "hubadmin": "h" * 16, "observer": "o" * 16},
           "oidc_jupyterhub_secret": "j" * 24, "oidc_grafana_secret": "g" * 24, "oidc_ctlgate_secret": "c" * 24,
           "oidc_monitoring_secret": "m" * 24, "oidc_fl_exporter_secret": "f" * 24}


@pytest.fixture(scope="module")
def kc():
    return load_entrypoint(paths.SERVICES_DIR / "keycloak" / "entrypoint.py", "keycloak_entry")


def federation(port: int) -> dict:
    fed = config.parse(yaml.safe_load(paths.CONFIG.read_text()))
    return json.loads(render.federation_json(fed, https_port=port))


@pytest.mark.parametrize(("port", "suffix"), [(443, ""), (8443, ":8443")])
def test_the_issuer_and_redirects_carry_the_published_port(kc, port, suffix):
    fed = federation(port)
    env = kc.keycloak_environment(kc.validate_federation(fed)["urls"]["auth"], "pw", {})
    assert env["KC_HOSTNAME"] == f"https://auth.{fed['domain']}{suffix}"
    realm = kc.render_realm(fed, SECRETS)
    clients = {c["clientId"]: c for c in realm["clients"]}
    assert clients["jupyterhub"]["redirectUris"] == [f"https://hub.{fed['domain']}{suffix}/hub/oauth_callback"]
    assert clients["grafana"]["redirectUris"] == [f"https://grafana.{fed['domain']}{suffix}/login/generic_oauth"]


def test_a_federation_file_without_urls_is_refused(kc):
    fed = federation(443)
    del fed["urls"]
    with pytest.raises(kc.ConfigError, match="federation.urls"):
        kc.render_realm(fed, SECRETS)


def test_every_user_gets_a_group_and_a_password(kc):
    realm = kc.render_realm(federation(443), SECRETS)
    users = {u["username"]: u for u in realm["users"] if "serviceAccountClientId" not in u}
    assert set(users) == set(SECRETS["keycloak_users"])
    assert "/superlink_users" in users["researcher"]["groups"]
    assert "/superlink_users" not in users["observer"]["groups"]


def test_the_fl_exporter_is_a_read_only_service_account(kc):
    realm = kc.render_realm(federation(443), SECRETS)
    account = next(u for u in realm["users"] if u.get("serviceAccountClientId") == "fl-exporter")
    assert set(account["realmRoles"]) == {"default-roles-flowerfl", "superlink_viewer"}
    client = next(c for c in realm["clients"] if c["clientId"] == "fl-exporter")
    assert client["serviceAccountsEnabled"] and not client["standardFlowEnabled"]
    assert client["secret"] == SECRETS["oidc_fl_exporter_secret"]
    audiences = [m["config"]["included.client.audience"] for m in client["protocolMappers"]
                 if m["protocolMapper"] == "oidc-audience-mapper"]
    assert audiences == ["ctlgate"]
    assert "superlink_viewer" in {r["name"] for r in realm["roles"]["realm"]}


def test_the_hubs_client_agrees_with_the_hub_and_ctlgate(kc):
    """Plain group names (the hub's allowed_groups are "jupyter_users"...), PKCE, and the
    audience and roles ctlgate checks, so the tokens the hub hands to its users'
    notebook servers work with the flwr CLI."""
    realm = kc.render_realm(federation(443), SECRETS)
    hub = {c["clientId"]: c for c in realm["clients"]}["jupyterhub"]
    mappers = {m["protocolMapper"]: m["config"] for m in hub["protocolMappers"]}
    assert mappers["oidc-group-membership-mapper"]["full.path"] == "false"
    assert mappers["oidc-audience-mapper"]["included.client.audience"] == "ctlgate"
    claims = [m["config"]["claim.name"] for m in hub["protocolMappers"]
              if m["protocolMapper"] == "oidc-usermodel-realm-role-mapper"]
    assert "realm_access.roles" in claims
    assert hub["attributes"]["pkce.code.challenge.method"] == "S256"
    assert {g["name"] for g in realm["groups"]} >= {"jupyter_users", "jupyter_admins"}
