"""The Flower federation: SuperNodes, runs, the researchers' connection."""
from pathlib import Path

from invoke import Exit, task

from .. import config, federation, paths, runlog
from ..services import CONNECTION_NAME
from . import clear_errors


@task(help={"rounds": "number of federated rounds (default 3)",
            "app": "the Flower app: a folder under ./apps (default digits)",
            "quiet": "show only the per-round metrics, not the whole log"})
@clear_errors
def run(c, rounds=3, app="digits", quiet=False):
    """Run a Flower app on the federation with per-round metrics (exit 1 if it fails).

    Submits apps/APP through the SuperLink's Control API over TLS (as the admin, inside
    the SuperLink container), streams its log, prints a table of the rounds' metrics
    (read by the parser the FL exporter uses, fedops/runlog.py) and exits non-zero
    unless the run ends finished:completed (`flwr run` itself exits 0)."""
    if not (paths.ROOT / "apps" / app / "pyproject.toml").exists():
        raise federation.FedopsError(f"no Flower app in apps/{app}",
                                     f"choose one of: {', '.join(p.parent.name for p in (paths.ROOT / 'apps').glob('*/pyproject.toml'))}")
    run_id = federation.submit(app, rounds)
    print(f"run {run_id} started: {app}, {rounds} round(s)", flush=True)
    parsed = runlog.RunLog()

    def show(line):
        event = parsed.line(line)
        if not quiet or event is not None:
            print(f"  | {runlog.strip_ansi(line)}", flush=True)

    row = federation.follow(run_id, show)
    summary = runlog.table(parsed)
    if summary:
        print("\n" + "\n".join(summary))
    print(f"\nrun {run_id}: {row['status']} ({row.get('elapsed', '')})")
    if row["status"] != "finished:completed":
        raise Exit(f"run {run_id} did not complete: {row['status']} {row.get('status-details', '')}\n"
                   f"  -> see `invoke fl.log {run_id}` and `invoke logs --service superlink`", code=1)


@task(help={"run_id": "the run's id (see invoke fl.status)"})
@clear_errors
def log(c, run_id):
    """Show a run's log."""
    print(federation.admin(["log", run_id, federation.ADMIN_CONNECTION], timeout=60).stdout)


@task(name="status", help={"all": "also list unregistered SuperNodes"})
@clear_errors
def status_(c, all=False):
    """List the SuperNodes (online or not) and the recent runs."""
    nodes = [n for n in federation.nodes() if all or n.status != "unregistered"]
    print(f"SuperNodes: {len(nodes)} ({sum(n.status == 'online' for n in nodes)} online)")
    for n in sorted(nodes, key=lambda n: n.name):
        print(f"  {n.name or '?':12} {n.node_id:>22}  {n.status:12} since {n.online_at or '-'}")
    runs = federation.runs()
    print(f"Runs: {len(runs)} (latest 10)")
    for r in sorted(runs, key=lambda r: r.get("pending-at") or "")[-10:]:
        print(f"  {r['run-id']:>22}  {r['fab-name']:10} {r['status']:22} {r.get('elapsed', '')}")


@task
@clear_errors
def register(c):
    """Register every organisation's SuperNode key with the SuperLink (idempotent)."""
    federation.register_all(c, config.load())


@task(help={"name": f"the connection's name in the flwr config (default {CONNECTION_NAME})",
            "flwr_home": "the flwr CLI's home folder (default ~/.flwr or $FLWR_HOME)"})
@clear_errors
def connection(c, name=CONNECTION_NAME, flwr_home=""):
    """Write the researchers' flwr connection (control.<domain>, the project CA).

    Adds [superlink.NAME] to the flwr CLI's config.toml, for `flwr login NAME` and
    `flwr run APP NAME`; other connections in the file are kept."""
    import os
    fed = config.load()
    home = Path(flwr_home or os.environ.get("FLWR_HOME") or Path.home() / ".flwr")
    path = federation.write_connection(home, name, fed)
    print(f"wrote connection '{name}' to {path}\nnext: flwr login {name}")


@task(help={"name": "the organisation: the name its SuperNode key was registered under"})
@clear_errors
def unregister(c, name):
    """Unregister an organisation's SuperNode key so that it can no longer connect.

    Offboarding: remove the organisation from federation.yaml, `invoke up` (its site
    stops), `invoke ca.revoke org-NAME` (the edge refuses its certificate), then this."""
    fed = config.load()
    if name in {o.name for o in fed.organisations}:
        raise federation.FedopsError(f"{name} is still an organisation in the configuration",
                                     "remove it from federation.yaml (or federation.local.yaml) and run "
                                     "`invoke up` first, or `invoke up` registers it again")
    nodes = [n for n in federation.nodes() if n.name == name and n.status != "unregistered"]
    if not nodes:
        raise federation.FedopsError(f"no registered SuperNode named {name}",
                                     "`invoke fl.status --all` lists every SuperNode and its name")
    for n in nodes:
        federation.unregister(n.node_id)
        print(f"unregistered {name}'s SuperNode {n.node_id}")
