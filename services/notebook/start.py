#!/usr/bin/env python3
"""Prepare a notebook server's home, then exec its command (jupyterhub-singleuser).

- ~/work: the notebook folder (on the user's named volume, like all of ~);
- ~/.flwr/ca-bundle.crt: the system roots plus the project CA (FL_PROJECT_CA_PEM, set
  by the hub; the CA is public), for Python (SSL_CERT_FILE) and the flwr CLI;
- ~/.flwr/config.toml: the connection FL_CONNECTION_NAME to control.<domain> through
  the edge, as the default, unless the user has changed the file (never overwritten);
- ~/.flwr/credentials.yaml: the user's tokens, fetched from the hub (flwr_tokens.py).
"""
import os
import subprocess
import sys
from pathlib import Path

home = Path.home()
flwr = home / ".flwr"
(home / "work").mkdir(exist_ok=True)
flwr.mkdir(mode=0o700, exist_ok=True)

ca = os.environ.get("FL_PROJECT_CA_PEM", "")
system = Path("/etc/ssl/certs/ca-certificates.crt").read_text()
if "BEGIN CERTIFICATE" in ca:
    (flwr / "ca.crt").write_text(ca.strip() + "\n")
(flwr / "ca-bundle.crt").write_text(system.rstrip() + "\n" + (ca.strip() + "\n" if ca else ""))

name = os.environ.get("FL_CONNECTION_NAME", "fl")
address = os.environ.get("FL_CONTROL_ADDRESS", "")
config = flwr / "config.toml"
if address and not config.exists():
    config.write_text(f'[superlink]\ndefault = "{name}"\n\n[superlink.{name}]\n'
                      f'address = "{address}"\nroot-certificates = "{flwr / "ca.crt"}"\n')

# The user's tokens for flwr, from the hub (flwr_tokens.py; `flwr` fetches them again
# before every command). Best effort: the server starts either way.
subprocess.run(["/opt/fl/bin/flwr", "--fl-tokens-only"], check=False, timeout=60)

argv = sys.argv[1:] or ["jupyterhub-singleuser"]
os.execvp(argv[0], argv)
