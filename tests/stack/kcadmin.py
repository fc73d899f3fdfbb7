"""Keycloak's admin REST API on the 127.0.0.1-only admin port, as the bootstrap admin."""
import ssl

import httpx


def admin_client(stack) -> httpx.Client:
    port = stack.setting("FL_KEYCLOAK_ADMIN_PORT")
    base = f"https://localhost:{port}"
    ctx = ssl.create_default_context(cafile=str(stack.ca))
    token = httpx.post(f"{base}/realms/master/protocol/openid-connect/token", verify=ctx, timeout=30, data={
        "grant_type": "password", "client_id": "admin-cli", "username": "admin",
        "password": stack.secret("keycloak_admin_password")})
    token.raise_for_status()
    return httpx.Client(base_url=f"{base}/admin/realms/flowerfl", verify=ctx, timeout=30,
                        headers={"Authorization": f"Bearer {token.json()['access_token']}"})


def user(admin: httpx.Client, username: str) -> dict:
    found = admin.get("/users", params={"username": username, "exact": "true"}).json()
    assert found, f"no user {username}"
    return found[0]


def add_to_group(stack, username: str, group_name: str) -> str:
    """Make a realm user a member of a group (idempotent); returns the username."""
    with admin_client(stack) as admin:
        group = next(g for g in admin.get("/groups").json() if g["name"] == group_name)
        admin.put(f"/users/{user(admin, username)['id']}/groups/{group['id']}").raise_for_status()
    return username
