"""Keycloak's admin REST API for realm flowerfl, on the administration port (published
on FL_ADMIN_BIND_ADDRESS only), as the bootstrap admin. Used by `invoke bench` for its
throwaway users and by the stack tests (tests/stack/kcadmin.py)."""
from __future__ import annotations

import ssl
from pathlib import Path

import httpx

from . import compose, paths
from .errors import FedopsError

REALM = "flowerfl"


def admin_client(ca: Path | None = None) -> httpx.Client:
    port = compose.setting("FL_KEYCLOAK_ADMIN_PORT", "8443")
    base = f"https://localhost:{port}"
    ctx = ssl.create_default_context(cafile=str(ca or paths.PKI_DIR / "ca.crt"))
    try:
        token = httpx.post(f"{base}/realms/master/protocol/openid-connect/token", verify=ctx, timeout=30, data={
            "grant_type": "password", "client_id": "admin-cli", "username": "admin",
            "password": (paths.SECRETS_DIR / "keycloak_admin_password").read_text().strip()})
    except httpx.HTTPError as exc:
        raise FedopsError(f"Keycloak's administration port {base} does not answer: {exc}",
                          "is the stack up? ./invoke up") from exc
    if token.status_code != 200:
        raise FedopsError(f"Keycloak refused the bootstrap admin: HTTP {token.status_code}",
                          "secrets/keycloak_admin_password must be the one Keycloak was first started with")
    return httpx.Client(base_url=f"{base}/admin/realms/{REALM}", verify=ctx, timeout=30,
                        headers={"Authorization": f"Bearer {token.json()['access_token']}"})


def find_user(admin: httpx.Client, username: str) -> dict | None:
    found = admin.get("/users", params={"username": username, "exact": "true"}).json()
    return found[0] if found else None


def user(admin: httpx.Client, username: str) -> dict:
    found = find_user(admin, username)
    if not found:
        raise FedopsError(f"realm {REALM} has no user {username}", "see federation.yaml's users")
    return found


def group_id(admin: httpx.Client, name: str) -> str:
    for g in admin.get("/groups").json():
        if g["name"] == name:
            return g["id"]
    raise FedopsError(f"realm {REALM} has no group {name}", "see services/keycloak/realm-flowerfl.json.j2")


def add_to_group(admin: httpx.Client, username: str, group: str) -> None:
    admin.put(f"/users/{user(admin, username)['id']}/groups/{group_id(admin, group)}").raise_for_status()


def create_user(admin: httpx.Client, username: str, password: str, groups: tuple[str, ...] = ()) -> str:
    """A realm user with a password and group memberships, replacing any of that name;
    returns its id."""
    delete_user(admin, username)
    admin.post("/users", json={
        "username": username, "enabled": True, "email": f"{username}@example.org", "emailVerified": True,
        "firstName": "Throwaway", "lastName": "User",
        "credentials": [{"type": "password", "value": password, "temporary": False}],
    }).raise_for_status()
    for g in groups:
        add_to_group(admin, username, g)
    return user(admin, username)["id"]


def delete_user(admin: httpx.Client, username: str) -> None:
    """Delete a realm user and its brute-force record, if it exists."""
    found = find_user(admin, username)
    if found:
        admin.delete(f"/attack-detection/brute-force/users/{found['id']}")
        admin.delete(f"/users/{found['id']}").raise_for_status()
