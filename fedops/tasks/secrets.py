"""Generated secrets (./secrets, git-ignored)."""
from invoke import task

from .. import config, paths, secrets
from . import clear_errors


@task(iterable=["rotate"],
      help={"rotate": "secret to replace with a new value (repeatable); restart its services after"})
@clear_errors
def generate(c, rotate=None):
    """Create missing passwords, client secrets and SuperNode keys (never overwrites)."""
    for name, result in secrets.generate(config.load(), rotate=tuple(rotate or ())).items():
        print(f"{name:28} {result}")


@task(name="list")
@clear_errors
def list_(c):
    """List the secrets and what each is for (not their values)."""
    for name, what in secrets.PASSWORDS.items():
        state = "present" if (paths.SECRETS_DIR / name).exists() else "MISSING"
        print(f"{name:28} {state:8} {what}")
    print(f"{secrets.USERS_FILE:28} {'present' if (paths.SECRETS_DIR / secrets.USERS_FILE).exists() else 'MISSING':8} "
          "Keycloak users' initial passwords (JSON)")
    print(f"{secrets.SUPERNODE_KEYS + '/':28} {'':8} SuperNode authentication keys, one per organisation")


@task(help={"username": "the Keycloak user (see federation.yaml)"})
@clear_errors
def password(c, username):
    """Print a Keycloak user's initial password."""
    users = secrets.user_passwords()
    if username not in users:
        raise secrets.FedopsError(f"no user {username!r}", f"known: {', '.join(sorted(users))}")
    print(users[username])
