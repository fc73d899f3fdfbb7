"""Everything `invoke up` does before images and containers: secrets, the CA,
certificates deployed per service, files rendered from the configuration. Idempotent:
what exists and is still right is kept."""
from __future__ import annotations

import os

from . import compose, config, ownership, paths, pki, render, secrets, services
from .ui import detail, step


def issue_all(fed: config.Federation, ca: pki.PKI) -> dict[str, str]:
    """Every certificate the configuration needs (idempotent)."""
    results = {}
    for svc in services.with_certificates():
        results[svc.name] = ca.ensure(svc.name, svc.sans(fed), kind="server")
    for org in fed.organisations:
        # serverClient: the org certificate is the site's client certificate at the edge
        # and its site proxy's server certificate on the site's loopback.
        results[org.cert_name] = ca.ensure(org.cert_name, services.org_sans(fed, org),
                                           kind="serverClient", org=org.display_name)
    return results


def deploy_all(fed: config.Federation, ca: pki.PKI) -> list[str]:
    """Deploy every certificate; returns the names whose files changed."""
    paths.DEPLOY_DIR.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.DEPLOY_DIR, 0o700)
    revoked = ca.revoked_names()
    targets = [(s.name, s.uid) for s in services.with_certificates()] + \
              [(o.cert_name, services.SITEPROXY_UID) for o in fed.organisations]
    changed = []
    for name, uid in targets:
        if name not in revoked:   # a revoked site keeps its (refused) old certificate
            if pki.deploy(ca, name, paths.DEPLOY_DIR / name, uid):
                changed.append(name)
    for svc in services.with_trust_only():
        pki.deploy_trust(ca, paths.DEPLOY_DIR / svc.name)
    pki.refresh_crl(ca)
    return changed


def give_supernode_keys(fed: config.Federation) -> None:
    folder = paths.SECRETS_DIR / secrets.SUPERNODE_KEYS
    for org in fed.organisations:
        ownership.give(folder / f"{org.name}.key", services.SUPERNODE_UID)


def project_ca(fed: config.Federation) -> pki.PKI:
    return pki.PKI(fed, runner=pki.default_runner(compose_argv=compose.argv(["tools"])))


def services_to_reload(deployed: list[str]) -> list[str]:
    """Compose services that must load new certificates: a site's certificate belongs
    to its site proxy."""
    return [f"siteproxy-{name[4:]}" if name.startswith("org-") else name for name in deployed]


def prepare(fed: config.Federation | None = None) -> tuple[config.Federation, list[str]]:
    """Config, secrets, CA, certificates and rendered files: everything before images.
    Returns the configuration and the services whose certificates changed."""
    fed = fed or config.load()
    step(f"secrets ({paths.SECRETS_DIR})")
    created = [k for k, v in secrets.generate(fed).items() if v != "kept"]
    detail(f"created: {', '.join(created)}" if created else "all present")
    give_supernode_keys(fed)
    # Rendered first: Compose (the ca-tools container, when easy-rsa is not on the
    # host) reads build/federation.env.
    changed_files = render.render_all(fed)
    if changed_files:
        detail(f"rendered: {', '.join(changed_files)}")
    ca = project_ca(fed)
    step(f"certificate authority ({paths.PKI_DIR}; easy-rsa on the {ca.runner.where})")
    detail("created a new CA" if ca.init() else "CA present, kept")
    if ca.ensure_crl_fresh():
        detail("CRL renewed")
    results = issue_all(fed, ca)
    changed = {k: v for k, v in results.items() if v != "kept"}
    detail(f"certificates: {len(results)} ({', '.join(f'{k} {v}' for k, v in changed.items()) or 'all kept'})")
    return fed, services_to_reload(deploy_all(fed, ca))
