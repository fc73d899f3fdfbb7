#!/opt/venv/bin/python
"""`flwr` in a notebook server: put the user's Keycloak tokens where `flwr login` puts
them, then run the real flwr CLI. No second login.

The tokens come from the hub's API (the user's auth state; the server's own hub token
may read only its own user's), never from the container's environment, labels or
command line. The hub refreshes them with its own Keycloak client when they near
expiry (services/jupyterhub/jupyterhub_config.py). When it can no longer do so (the
single sign-on session has ended: signed out, logged out by an administrator, or idle
too long), the hub still answers with the tokens it has, now expired; they are then not
stored (a `flwr login` of the user's own is kept), and this says to run `flwr login`.
"""
import base64
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

FLWR = "/opt/venv/bin/flwr"
FLWR_HOME = Path(os.environ.get("FLWR_HOME", Path.home() / ".flwr"))
HUB_CLIENT = "jupyterhub"      # the Keycloak client the hub's tokens are issued to
SKEW = 10                      # seconds: a token closer than this to its end is expired
SESSION_ENDED = (
    "flwr (notebook): your single sign-on session has ended, so the hub can no longer renew "
    "your Flower tokens. Run `flwr login` (in a terminal, or `!flwr login` in a cell) to sign "
    "in again, or sign out of the hub and back in.")


def claims(token: str) -> dict:
    """A JWT's payload, unverified (only to read its expiry and client: the Control
    API's gate verifies the signature)."""
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return data if isinstance(data, dict) else {}
    except (IndexError, ValueError, TypeError):
        return {}


def fresh(token: str, now: float) -> bool:
    return float(claims(token).get("exp", 0)) > now + SKEW


def decide(hub_state: dict | None, stored_token: str, now: float) -> str:
    """What to do before running the CLI:
    "store"  the hub's tokens are fresh: put them into flwr's credential store;
    "keep"   nothing to do (the hub did not answer, or what is stored is still good,
             e.g. the user's own `flwr login`, which flwr refreshes itself);
    "ended"  the hub's tokens have expired (it could not refresh them) and nothing
             usable is stored: the single sign-on session has ended."""
    access = (hub_state or {}).get("access_token") or ""
    if access and fresh(access, now):
        return "store"
    if hub_state is None:
        return "keep"
    if stored_token and (fresh(stored_token, now) or claims(stored_token).get("azp") not in (HUB_CLIENT, None)):
        return "keep"
    return "ended"


def hub_tokens() -> dict | None:
    """The user's auth state from the hub ({} when it has none), None when the hub
    cannot be asked."""
    api, token = os.environ.get("JUPYTERHUB_API_URL"), os.environ.get("JUPYTERHUB_API_TOKEN")
    user = os.environ.get("JUPYTERHUB_USER")
    if not api or not token or not user:
        return None
    # /users/<name> (not /user) is the model that carries auth_state.
    req = urllib.request.Request(f"{api}/users/{user}", headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp).get("auth_state") or {}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"flwr (notebook): the hub did not answer ({exc}); using the stored tokens", file=sys.stderr)
        return None


def control_address() -> str | None:
    """The platform's Control API address, if the user's flwr configuration has it."""
    config = FLWR_HOME / "config.toml"
    wanted = os.environ.get("FL_CONTROL_ADDRESS")
    if not wanted or not config.exists():
        return None
    return wanted if wanted in set(re.findall(r'address = "([^"]+)"', config.read_text())) else None


def credential_store():
    from flwr.supercore.credential_store import FileCredentialStore
    return FileCredentialStore(FLWR_HOME / "credentials.yaml")


def stored_access_token(address: str) -> str:
    from flwr.cli.constant import ACCESS_TOKEN_STORE_KEY
    try:
        return (credential_store().get(ACCESS_TOKEN_STORE_KEY % address) or b"").decode()
    except Exception:  # noqa: BLE001 - an unreadable store holds nothing usable
        return ""


def store(address: str, state: dict) -> None:
    """Only the platform's Control API gets these tokens."""
    from flwr.cli.constant import ACCESS_TOKEN_STORE_KEY, AUTHN_TYPE_STORE_KEY, REFRESH_TOKEN_STORE_KEY
    creds = credential_store()
    creds.set(AUTHN_TYPE_STORE_KEY % address, b"oidc")
    creds.set(ACCESS_TOKEN_STORE_KEY % address, state["access_token"].encode())
    creds.set(REFRESH_TOKEN_STORE_KEY % address, (state.get("refresh_token") or "").encode())


# JupyterLab's kernels set these so that tools colour what they print into a cell
# (ipykernel's init_environment); rich then colours `--format json` too, which a
# program reading the output (json.loads in a cell) cannot parse.
FORCED_COLOUR = ("FORCE_COLOR", "CLICOLOR_FORCE")


def cli_environment(args: list[str], env: dict[str, str]) -> dict[str, str]:
    """The CLI's environment: JSON output is for programs, never forced into colour."""
    wants_json = "--format=json" in args or any(
        a == "--format" and b == "json" for a, b in zip(args, args[1:]))
    return {k: v for k, v in env.items() if not (wants_json and k in FORCED_COLOUR)}


def main() -> None:
    args = sys.argv[1:]
    address = control_address()
    # `flwr login` signs in by itself (device flow): never overwrite what it stores.
    if address and args[:1] != ["login"]:
        state = hub_tokens()
        if state == {}:
            print("flwr (notebook): the hub holds no tokens for you: sign in to the hub again, "
                  "or run `flwr login`", file=sys.stderr)
        else:
            action = decide(state, stored_access_token(address), time.time())
            if action == "store":
                store(address, state)
            elif action == "ended":
                print(SESSION_ENDED, file=sys.stderr)
    if args[:1] != ["--fl-tokens-only"]:
        os.execve(FLWR, [FLWR, *args], cli_environment(args, dict(os.environ)))


if __name__ == "__main__":
    main()
