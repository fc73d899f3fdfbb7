"""Project certificate authority (easy-rsa in ./ca)."""
from invoke import task

from .. import compose, config, paths, pki, preflight, prepare, render, stack
from . import clear_errors


def _pki(fed):
    render.render_all(fed)   # the ca-tools container (no easy-rsa on the host) needs build/
    ca = prepare.project_ca(fed)
    where = "on this host" if ca.runner.where == "host" else "in the ca-tools container"
    print(f"easy-rsa {where} (FL_EASYRSA={compose.setting('FL_EASYRSA', 'auto')}); PKI in {ca.dir}")
    return ca


@task(help={"force": "replace an existing CA (every certificate must then be re-issued): asks first",
            "yes": "with --force: do not ask"})
@clear_errors
def init(c, force=False, yes=False):
    """Create the project CA in ./ca/pki from federation.yaml (refuses to overwrite)."""
    fed = config.load()
    ca = _pki(fed)
    if ca.exists() and not force:
        print(f"CA exists in {ca.dir}: kept (use --force to replace it)")
        return
    if force and ca.exists() and not preflight.confirm(
            "Replace the CA? Every certificate issued by it stops being trusted.", yes,
            "--force replaces the CA"):
        print("kept the CA")
        return
    ca.init(force=force)
    print(f"created the CA in {ca.dir} (key: {ca.dir / 'private/ca.key'}, never commit or copy it)")


@task
@clear_errors
def issue(c):
    """Issue every service and organisation certificate the config needs (idempotent)."""
    fed = config.load()
    for name, result in prepare.issue_all(fed, _pki(fed)).items():
        print(f"{name:24} {result}")


@task
@clear_errors
def deploy(c):
    """Copy certificates, keys, CA and CRL into ./ca/deploy/<service> (read-only mounts)."""
    fed = config.load()
    prepare.deploy_all(fed, _pki(fed))
    print(f"deployed to {paths.DEPLOY_DIR}")


@task(name="status")
@clear_errors
def status_(c):
    """List every certificate: subject, SANs, expiry, CA verification; the CRL's next update."""
    fed = config.load()
    rows, next_update = pki.status(_pki(fed))
    for r in rows:
        print(f"{r.name:18} {r.state:10} expires {r.not_after:%Y-%m-%d} ({r.days_left:4d} d)  {r.key}")
        print(f"{'':18} subject {r.subject}")
        if r.sans:
            print(f"{'':18} SANs    {', '.join(r.sans)}")
    print(f"CRL next update: {next_update:%Y-%m-%d %H:%M} UTC" if next_update else "CRL: none yet")


@task(help={"name": "certificate to revoke: an organisation name (alpha) or a certificate name (org-alpha, nginx)",
            "reason": "easy-rsa revocation reason (default: keyCompromise)"})
@clear_errors
def revoke(c, name, reason="keyCompromise"):
    """Revoke a certificate, regenerate the CRL, redeploy it and reload the edge."""
    fed = config.load()
    ca = _pki(fed)
    cert = name if ca.cert(name).exists() else fed.organisation(name).cert_name
    ca.revoke(cert, reason=reason, remember=True)
    changed = pki.refresh_crl(ca)
    print(f"revoked {cert}; CRL updated in {len(changed)} deployed folder(s)")
    if "nginx" in stack.running():
        compose.run(c, "exec", "-T", "nginx", *stack.RELOAD_COMMAND, echo=True, hide="out")
        print("edge reloaded: the revoked certificate is refused from now on")


@task(help={"name": "an organisation name or certificate name revoked earlier"})
@clear_errors
def reinstate(c, name):
    """Allow a revoked organisation/certificate to be issued again (by `invoke up`)."""
    fed = config.load()
    ca = _pki(fed)
    cert = name if name in ca.revoked_names() else fed.organisation(name).cert_name
    if cert not in ca.revoked_names():
        print(f"{cert} is not revoked: nothing to do")
        return
    ca.reinstate(cert)
    print(f"{cert} may be issued again: run `invoke up` (it issues a new certificate)")
