#!/usr/bin/env python3
"""Prepare a notebook server's home, then exec its command (jupyterhub-singleuser).

- ~/work: the notebook folder (on the user's named volume, like all of ~), with the
  image's samples (/opt/fl/skel/work: the sample notebook and apps/digits) copied in
  where they are missing: a file the user has edited is never replaced, a deleted one
  comes back at the next start;
- ~/.flwr/ca-bundle.crt: the system roots plus the project CA (FL_PROJECT_CA_PEM, set
  by the hub; the CA is public), for Python (SSL_CERT_FILE) and the flwr CLI;
- ~/.flwr/config.toml: the connection FL_CONNECTION_NAME to control.<domain> through
  the edge, as the default, unless the user has changed the file (never overwritten);
- ~/.flwr/credentials.yaml: the user's tokens, fetched from the hub (flwr_tokens.py).
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

SKELETON = Path(os.environ.get("FL_NOTEBOOK_SKELETON", "/opt/fl/skel"))


def copy_missing(src: Path, dst: Path) -> list[str]:
    """Copy every file of src into dst that dst does not have (never overwrites)."""
    copied = []
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif not target.exists() and not target.is_symlink():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            copied.append(str(target.relative_to(dst)))
    return copied



def main() -> None:
    home = Path.home()
    flwr = home / ".flwr"
    (home / "work").mkdir(exist_ok=True)
    flwr.mkdir(mode=0o700, exist_ok=True)
    if SKELETON.is_dir():
        added = copy_missing(SKELETON, home)
        if added:
            print(f"fl-notebook-start: added to your home: {', '.join(added)}", file=sys.stderr, flush=True)

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


if __name__ == "__main__":
    main()
