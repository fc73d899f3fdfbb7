"""Backup and recovery: PostgreSQL, the SuperLink's state, the CA, secrets and config."""
from pathlib import Path

from invoke import task

from . import clear_errors


@task(help={"output": "folder to create the backup in, as a new <UTC timestamp> subfolder "
                      "(default ./backups); it holds the CA key and every secret: keep it private"})
@clear_errors
def backup(c, output=""):
    """Back up the running stack: databases, SuperLink state, CA, secrets, local config."""
    from .. import backup as backups   # in the task: the other tasks do not pay for its imports
    folder, _ = backups.create(Path(output) if output else None)
    print(f"backup written to {folder}")


@task(positional=["backup_dir"], help={
    "backup_dir": "a folder written by `invoke backup` (e.g. backups/20260101T000000Z)",
    "yes": "do not ask for a confirmation",
    "with_ca_and_secrets": "also restore ca/pki and secrets/ (only where they are missing, "
                           "unless --force)",
    "force": "with --with-ca-and-secrets: replace a present CA and secrets (moved to "
             "backups/replaced-<time>/, never deleted)"})
@clear_errors
def restore(c, backup_dir, yes=False, with_ca_and_secrets=False, force=False):
    """Restore a backup: checksums first, then databases and SuperLink state (asks first)."""
    from .. import backup as backups
    if backups.restore(Path(backup_dir), yes=yes, with_ca_and_secrets=with_ca_and_secrets, force=force):
        print(f"restored from {backup_dir}")
