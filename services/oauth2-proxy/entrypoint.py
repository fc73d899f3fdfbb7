#!/usr/bin/env python3
"""oauth2-proxy entrypoint: the edge's sign-on for the monitoring UIs.

The edge asks it (`auth_request`, over TLS verified against the project CA) whether a
request to prometheus.<domain> or alertmanager.<domain> carries a session of a Keycloak
user with the realm role monitoring_viewer; /oauth2/ (sign-in, callback) is proxied to
it on those hosts. Keycloak is reached the way ctlgate reaches it: the browser at the
public URL (the issuer), the back channel (token, keys) at https://auth.<domain> inside
the engine, through the edge.

  entrypoint.py              validate, exec oauth2-proxy (secrets in its environment only)
  entrypoint.py check        validate and print the command line, exit
  entrypoint.py healthcheck  ask the running proxy's /ping

Pure helpers (load_federation, command) are importable for unit tests.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

FEDERATION = Path(os.environ.get("FL_FEDERATION_JSON", "/etc/fl/federation.json"))
TLS = Path(os.environ.get("FL_TLS_DIR", "/etc/fl/tls"))
SECRETS = Path(os.environ.get("FL_SECRETS_DIR", "/run/secrets"))
LISTEN_PORT = 4180
REALM = "flowerfl"
CLIENT_ID = "monitoring"                 # services/keycloak/realm-flowerfl.json.j2
ROLE = "monitoring_viewer"               # the realm role that may use the monitoring UIs
CLIENT_SECRET = "oidc_monitoring_secret"
COOKIE_SECRET = "oauth2_proxy_cookie_secret"
COOKIE_NAME = "_fl_monitoring"


def fail(message: str) -> None:
    print(f"oauth2-proxy entrypoint: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def load_federation(path: Path = FEDERATION) -> dict:
    try:
        fed = json.loads(path.read_text())
    except FileNotFoundError:
        fail(f"{path} is missing; mount build/federation.json there (invoke up renders it)")
    except (OSError, ValueError) as exc:
        fail(f"{path} is not readable JSON: {exc}")
    for key in ("hostnames", "urls"):
        if "auth" not in fed.get(key, {}):
            fail(f"{path} has no {key}.auth; run: invoke up (it renders build/federation.json)")
    return fed


def secret(name: str, secrets: Path = SECRETS, sizes: tuple[int, ...] = ()) -> str:
    try:
        value = (secrets / name).read_text().strip()
    except OSError:
        value = ""
    if not value:
        fail(f"secret {secrets / name} is missing; run: invoke secrets.generate")
    if sizes and len(value) not in sizes:
        fail(f"secret {name} must be {' or '.join(map(str, sizes))} characters long (it is {len(value)}); "
             f"run: invoke secrets.generate --rotate {name}")
    return value


def command(fed: dict, tls: Path = TLS) -> list[str]:
    issuer = f"{fed['urls']['auth']}/realms/{REALM}"
    backchannel = f"https://{fed['hostnames']['auth']}/realms/{REALM}/protocol/openid-connect"
    return [
        "oauth2-proxy",
        "--http-address=", f"--https-address=0.0.0.0:{LISTEN_PORT}",
        f"--tls-cert-file={tls / 'tls.crt'}", f"--tls-key-file={tls / 'tls.key'}",
        "--tls-min-version=TLS1.2",
        "--provider=keycloak-oidc", f"--client-id={CLIENT_ID}",
        f"--oidc-issuer-url={issuer}",
        # the browser goes to the public URL; tokens and keys come over the back channel
        "--skip-oidc-discovery", f"--login-url={issuer}/protocol/openid-connect/auth",
        f"--redeem-url={backchannel}/token", f"--oidc-jwks-url={backchannel}/certs",
        f"--validate-url={backchannel}/userinfo", f"--profile-url={backchannel}/userinfo",
        f"--provider-ca-file={tls / 'ca.crt'}",
        f"--allowed-role={ROLE}", "--email-domain=*", "--scope=openid profile email",
        "--code-challenge-method=S256",
        # auth_request mode: the edge proxies the UIs itself; the redirect URL follows
        # the host asked for (X-Forwarded-Host from the edge, with the public port)
        "--upstream=static://202", "--reverse-proxy=true", "--skip-provider-button=true",
        f"--cookie-name={COOKIE_NAME}", "--cookie-secure=true", "--cookie-httponly=true",
        "--cookie-samesite=lax", "--cookie-expire=8h", "--cookie-refresh=5m",
        "--set-xauthrequest=true", "--silence-ping-logging=true",
    ]


def healthcheck() -> int:
    import ssl
    import urllib.request
    context = ssl.create_default_context(cafile=str(TLS / "ca.crt"))
    context.check_hostname = False    # localhost is in the certificate, but keep it simple
    try:
        with urllib.request.urlopen(f"https://localhost:{LISTEN_PORT}/ping", timeout=4, context=context) as resp:
            return 0 if resp.status == 200 else 1
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
        print(f"oauth2-proxy healthcheck: {exc}", file=sys.stderr)
        return 1


def main(args: list[str]) -> None:
    if args[:1] == ["healthcheck"]:
        sys.exit(healthcheck())
    fed = load_federation()
    for name in ("tls.crt", "tls.key", "ca.crt"):
        if not (TLS / name).is_file():
            fail(f"{TLS / name} is missing; run: invoke ca.deploy")
    env = dict(os.environ)
    env["OAUTH2_PROXY_CLIENT_SECRET"] = secret(CLIENT_SECRET)
    env["OAUTH2_PROXY_COOKIE_SECRET"] = secret(COOKIE_SECRET, sizes=(16, 24, 32))
    argv = command(fed)
    if args[:1] == ["check"]:
        print(" ".join(argv))
        sys.exit(0)
    os.execvpe(argv[0], argv, env)


if __name__ == "__main__":
    main(sys.argv[1:])
