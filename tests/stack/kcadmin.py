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
