"""Host integration: /etc/hosts entries for the public hostnames."""
from pathlib import Path

from invoke import task

from .. import compose, config, hosts as hostsfile
from . import clear_errors


@task(help={"install": "add (or update) the marked block in the hosts file",
                          "remove": "remove the marked block",
                          "file": "hosts file to edit (default /etc/hosts)"})
@clear_errors
def hosts(c, install=False, remove=False, file="/etc/hosts"):
    """Print the /etc/hosts lines for the public hostnames; --install/--remove edit them."""
    fed = config.load()
    project = compose.project_name()
    path = Path(file)
    if install or remove:
        try:
            changed = hostsfile.install(path, fed, project) if install else hostsfile.remove(path, project)
        except PermissionError:
            raise hostsfile_error(path)
        print(f"{path}: {'updated' if changed else 'already up to date'}")
    else:
        print(hostsfile.block(fed, project), end="")


def hostsfile_error(path):
    from ..errors import FedopsError
    return FedopsError(f"no permission to write {path}", "run it with sudo, or pass --file")
