"""Identity: Keycloak's realm flowerfl."""
from pathlib import Path

from invoke import task

from .. import compose, paths
from ..errors import FedopsError
from . import clear_errors


@task(help={"output": "file to write (default build/realm-export/flowerfl.json); it holds "
                      "password hashes and client secrets: keep it private"})
@clear_errors
def export(c, output=""):
    """Write the live realm (with users and clients) out of the running Keycloak."""
    out = Path(output) if output else paths.BUILD_DIR / "realm-export" / "flowerfl.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    args = ["exec", "-T", "keycloak", "python3", "/usr/local/bin/entrypoint.py", "export"]
    print(f"$ {compose.command(*args)} > {out}", flush=True)
    proc = compose.call(*args, timeout=300)
    if proc.returncode != 0 or not proc.stdout.strip().startswith("{"):
        raise FedopsError(f"the realm export failed: {proc.stderr.strip()[-600:]}",
                          "is Keycloak running? `invoke status`")
    out.write_text(proc.stdout)
    out.chmod(0o600)
    print(f"wrote {out} ({len(proc.stdout) // 1024} KiB; contains secrets, mode 0600)")
