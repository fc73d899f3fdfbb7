#!/opt/venv/bin/python
"""`flwr` in a notebook server: put the user's Keycloak tokens where `flwr login` puts
them, then run the real flwr CLI. No second login.

The tokens come from the hub's API (the user's auth state; the server's own hub token
may read only its own user's), never from the container's environment, labels or
command line. The hub refreshes them with its own Keycloak client when they near
expiry (services/jupyterhub/jupyterhub_config.py). When the single sign-on session has
ended, this says so and the CLI runs with what it has (`flwr login` signs in again).
"""
import json
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

FLWR = "/opt/venv/bin/flwr"
FLWR_HOME = Path(os.environ.get("FLWR_HOME", Path.home() / ".flwr"))


def hub_tokens() -> dict | None:
    api, token = os.environ.get("JUPYTERHUB_API_URL"), os.environ.get("JUPYTERHUB_API_TOKEN")
    user = os.environ.get("JUPYTERHUB_USER")
    if not api or not token or not user:
        return None
    # /users/<name> (not /user) is the model that carries auth_state.
    req = urllib.request.Request(f"{api}/users/{user}", headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            state = json.load(resp).get("auth_state") or {}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"flwr (notebook): the hub did not answer ({exc}); using the stored tokens", file=sys.stderr)
        return None
    if not state.get("access_token"):
        print("flwr (notebook): your single sign-on session has ended: sign in to the hub again, "
              "or run `flwr login` in a terminal", file=sys.stderr)
        return None
    return state


def store(state: dict) -> None:
    from flwr.cli.constant import ACCESS_TOKEN_STORE_KEY, AUTHN_TYPE_STORE_KEY, REFRESH_TOKEN_STORE_KEY
    from flwr.supercore.credential_store import FileCredentialStore
    config = FLWR_HOME / "config.toml"
    if not config.exists():
        return
    addresses = set(re.findall(r'address = "([^"]+)"', config.read_text()))
    wanted = os.environ.get("FL_CONTROL_ADDRESS")
    creds = FileCredentialStore(FLWR_HOME / "credentials.yaml")
    for address in addresses:
        if address == wanted:      # only the platform's Control API gets these tokens
            creds.set(AUTHN_TYPE_STORE_KEY % address, b"oidc")
            creds.set(ACCESS_TOKEN_STORE_KEY % address, state["access_token"].encode())
            creds.set(REFRESH_TOKEN_STORE_KEY % address, (state.get("refresh_token") or "").encode())


def main() -> None:
    state = hub_tokens()
    if state:
        store(state)
    if sys.argv[1:2] != ["--fl-tokens-only"]:
        os.execv(FLWR, [FLWR, *sys.argv[1:]])


if __name__ == "__main__":
    main()
