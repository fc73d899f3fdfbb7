"""Bringing the whole stack up and down (the most-used tasks, also at the top level)."""
import sys

from invoke import task

from .. import bringup, compose, config, paths, pki, preflight, prepare, render, stack, vendor
from ..ui import detail
from . import clear_errors


def hooks():
    """Steps that run when a service becomes ready, before what depends on it starts:
    the SuperNodes' keys are registered once the SuperLink answers."""
    from .. import federation
    return {"superlink": federation.register_all}


@task(iterable=["profile"], help={
    "profile": "optional profile to include (repeatable): gpu adds GPU reservations and DCGM; "
               "grafana forces Grafana even when its vendor image seems unavailable",
    "no_build": "do not (re)build images; use the ones present"})
@clear_errors
def up(c, profile=None, no_build=False):
    """Set up everything needed and start the stack, each service as soon as what it needs is ready.

    Prepares secrets, the CA, certificates and rendered files, builds the images that
    changed, then starts the services by their dependencies (depends_on), waiting for
    each to be ready; the output names each service's phase of the task list."""
    preflight.docker_engine()   # first: nothing is prepared for an engine that is not there
    fed, restart = prepare.prepare()
    # Services built FROM a vendor's image (Grafana) join only when that image can be had
    # One `docker compose config` for every step, read with every profile they may need
    from ..images import BUILD_ONLY_PROFILES
    full = stack.model([*(profile or []), *vendor.PROFILES, *BUILD_ONLY_PROFILES])
    profiles, decisions = vendor.resolve(profile or [], model=lambda p: stack.for_profiles(full, p))
    for d in decisions:
        if d.line:
            detail(d.line)
    bringup.up(c, fed, profiles=profiles, build=not no_build, hooks=hooks(), restart=restart, model=full)
    print(f"\nThe federation is up: https://{fed.domain}/ (users' passwords: invoke secrets.password USER)")


@task(help={"volumes": "also delete the data volumes (PostgreSQL, SuperLink state, notebook homes): asks first",
            "yes": "with --volumes: do not ask"})
@clear_errors
def down(c, volumes=False, yes=False):
    """Stop the stack, keeping data (--volumes wipes it after a confirmation)."""
    args = ["down", "--remove-orphans"]
    if volumes:
        if not preflight.confirm("Delete all data volumes (databases, SuperLink state)?", yes,
                                 "--volumes deletes all data"):
            print("nothing deleted")
            return
        args.append("--volumes")
    # The notebook servers first: they hold the notebooks network Compose removes.
    from .. import engine
    for name in engine.remove_notebooks(compose.project_name(), volumes=volumes):
        print(f"removed {name}")
    compose.run(c, *args, profiles=["tools", "gpu", *vendor.PROFILES])


@task(name="status")
@clear_errors
def status_(c):
    """Each service: state, health, published ports and its certificate's expiry."""
    rows = stack.ps(profiles=vendor.PROFILES)
    if not rows:
        print("nothing is running: start it with `invoke up`")
        return
    print(f"{'SERVICE':22} {'STATE':10} {'HEALTH':10} {'CERT EXPIRES':14} PORTS")
    for r in rows:
        cert = paths.DEPLOY_DIR / (r.service.replace("supernode-", "org-").replace("siteproxy-", "org-")) / "tls.crt"
        expiry = f"{pki.load_cert(cert).not_valid_after_utc:%Y-%m-%d}" if cert.exists() else "-"
        print(f"{r.service:22} {r.state:10} {r.health:10} {expiry:14} {r.ports}")


@task(help={"service": "only this service", "follow": "keep following", "tail": "lines per service"})
@clear_errors
def logs(c, service="", follow=False, tail=100):
    """Show the services' logs."""
    args = ["logs", "--tail", str(tail)] + (["-f"] if follow else []) + ([service] if service else [])
    compose.run(c, *args, pty=sys.stdout.isatty())


@task(name="config")
@clear_errors
def config_(c):
    """Validate federation.yaml and the Compose model; show the rendered files."""
    fed = config.load()
    changed = render.render_all(fed)
    print(f"federation: domain {fed.domain}, organisations "
          f"{', '.join(o.name for o in fed.organisations)}, users {', '.join(u.username for u in fed.users)}")
    if changed:
        print(f"rendered {', '.join(changed)} into {paths.BUILD_DIR}")
    compose.run(c, "config", "--quiet")
    print("compose model: valid")
