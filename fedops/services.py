"""The platform's services as the task runner sees them: service users, public hostnames
and which trust zones may use each hostname at the edge. Written once here, read
everywhere:

- the tasks (certificate SANs, key ownership, `invoke hosts`),
- Compose, through build/federation.env (FL_UID_<SERVICE> for `user:` and the images'
  FL_UID build argument, FL_HOST_<NAME> for the edge's network aliases),
- the edge, through build/federation.json (`hostnames`, `zones`): each public host's
  server block answers only the zones listed here (plus the outside world, through the
  published ports),
- the docs (a unit test checks that the tables in docs/ match).

Bring-up order and dependencies live in the Compose files (`depends_on`, label
`fl.phase`), not here.
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import Federation

# The internal zones the edge can tell apart (one network each, networks/compose.yml);
# anything else reaching the edge came through a published port: "external".
ZONES = ("services", "clients", "monitoring", "superlink", "notebooks")


@dataclass(frozen=True)
class PublicHost:
    name: str                     # FL_HOST_<NAME> in Compose, the key in federation.json
    prefix: str                   # "" for the bare domain
    zones: tuple[str, ...]        # internal zones the edge serves this host to
    purpose: str


PUBLIC_HOSTS: tuple[PublicHost, ...] = (
    PublicHost("landing", "", ("monitoring",), "landing page: every service and its state"),
    PublicHost("auth", "auth", ("services", "monitoring", "notebooks"), "Keycloak's public endpoints (single sign-on)"),
    PublicHost("fleet", "fleet", ("clients", "monitoring"), "the Fleet API for SuperNode sites (organisation certificates)"),
    PublicHost("control", "control", ("monitoring", "notebooks"), "the Control API for the flwr CLI (single sign-on)"),
    PublicHost("hub", "hub", ("monitoring", "notebooks"), "JupyterHub"),
    PublicHost("grafana", "grafana", ("monitoring",), "Grafana"),
    PublicHost("prometheus", "prometheus", ("monitoring",), "Prometheus (Keycloak sign-on, role monitoring_viewer)"),
    PublicHost("alertmanager", "alertmanager", ("monitoring",), "Alertmanager (Keycloak sign-on, role monitoring_viewer)"),
)


# The researchers' flwr CLI connection (`invoke fl.connection`, the landing page).
CONNECTION_NAME = "fl"


def public_host(name: str) -> PublicHost:
    for host in PUBLIC_HOSTS:
        if host.name == name:
            return host
    raise KeyError(name)


def hostnames(fed: Federation) -> dict[str, str]:
    """{name: fully qualified hostname} for every public host."""
    return {h.name: fed.hostname(h.prefix) for h in PUBLIC_HOSTS}


def public_urls(fed: Federation, https_port: int = 443) -> dict[str, str]:
    """{name: the URL people and clients use}: the edge's published HTTPS port (from
    FL_HTTPS_PORT) appears in it unless it is 443. Keycloak's issuer, the redirect URIs
    of the realm's clients and the landing page's links are built from these."""
    suffix = "" if https_port == 443 else f":{https_port}"
    return {name: f"https://{host}{suffix}" for name, host in hostnames(fed).items()}


@dataclass(frozen=True)
class Service:
    name: str
    uid: int                        # its user and group id, in its image and in Compose
    public: tuple[str, ...] = ()    # public hosts (PUBLIC_HOSTS names) its certificate names
    certificate: bool = True        # gets a server certificate from the project CA
    trust: bool = False             # without a certificate: the CA certificate and the CRL only

    def sans(self, fed: Federation) -> list[str]:
        """Compose service name, public hostname(s), localhost and 127.0.0.1."""
        names = [self.name] + [fed.hostname(public_host(p).prefix) for p in self.public] + ["localhost"]
        return [f"DNS:{n}" for n in dict.fromkeys(names)] + ["IP:127.0.0.1"]


SERVICES: tuple[Service, ...] = (
    Service("postgres", 10010),
    Service("keycloak", 10020, public=("auth",)),
    Service("ctlgate", 10080),
    Service("nginx", 10030, public=tuple(h.name for h in PUBLIC_HOSTS)),
    Service("superlink", 10040),
    # one of each per organisation (services/supernode/compose.organisations.yml.j2);
    # the site's certificate is the organisation's (org_sans), not a service certificate
    Service("supernode", 10050, certificate=False),
    Service("siteproxy", 10031, certificate=False),
    # phase 5.1: notebooks. The Docker API proxy holds the engine's socket (group from
    # FL_DOCKER_GID) and talks plain HTTP on its own network: no certificate.
    Service("jupyterhub", 10060, public=("hub",)),
    Service("dockerproxy", 10061, certificate=False),
    # the notebook servers' forward proxy to the internet (plain HTTP proxy protocol)
    Service("egress-proxy", 10062, certificate=False),
    # phase 5.2 monitoring: Prometheus' certificate names its public host (for the edge's
    # sign-on gate to come); the others serve plain HTTP on the monitoring network only
    Service("prometheus", 10070, public=("prometheus",)),
    Service("alertmanager", 10071, certificate=False),
    Service("node-exporter", 10072, certificate=False),
    Service("nginx-exporter", 10073, certificate=False),
    Service("postgres-exporter", 10074, certificate=False),
    Service("blackbox-exporter", 10075, certificate=False),
    # the edge's sign-on for prometheus. and alertmanager. (auth_request, TLS)
    Service("oauth2-proxy", 10076),
    # the federation as metrics, read through control.<domain> (service account); the
    # CA verifies the edge, the CRL's expiry is a metric
    Service("fl-exporter", 10077, certificate=False, trust=True),
    # dashboards at grafana.<domain>: plain HTTP on the monitoring network behind the
    # edge; the project CA (prometheus' deploy folder) verifies PostgreSQL and Keycloak
    Service("grafana", 10078, certificate=False),
)


def by_name(name: str) -> Service:
    for svc in SERVICES:
        if svc.name == name:
            return svc
    raise KeyError(name)


def with_certificates() -> tuple[Service, ...]:
    return tuple(s for s in SERVICES if s.certificate)


def with_trust_only() -> tuple[Service, ...]:
    """Services that get the CA certificate and the CRL but no certificate of their own."""
    return tuple(s for s in SERVICES if s.trust and not s.certificate)


SUPERNODE_UID = by_name("supernode").uid
SITEPROXY_UID = by_name("siteproxy").uid


# A SuperNode container's CPU weight (Docker's cpu_shares; every other container has the
# default 1024). Its ClientApps are the federation's compute: when they fill the
# machine's cores, the SuperLink, the edge and the site proxies, which every SuperNode
# needs to answer within flwr's fixed time-outs, still get their share. Measured with
# 48 SuperNodes on 2 cores (docs/benchmarks.md): at equal weights the SuperLink got ~3 %
# of a core and the edge answered the SuperNodes' heartbeats with 499 and 504.
SUPERNODE_CPU_SHARES = 256


def org_sans(fed: Federation, org) -> list[str]:
    """An organisation's certificate is a client certificate at the edge and the server
    certificate of its site proxy on the site's loopback."""
    return [f"DNS:{org.service}", "DNS:localhost", "IP:127.0.0.1"]


def env_name(name: str) -> str:
    """A service or host name as it appears in a Compose variable (node-exporter:
    NODE_EXPORTER)."""
    return name.upper().replace("-", "_")


def compose_variables(fed: Federation, https_port: int = 443) -> dict[str, str]:
    """What Compose needs from here (rendered into build/federation.env): the service
    users, the public hostnames (the edge's aliases) and their public URLs (with the
    published HTTPS port: what browsers use, e.g. Grafana's root URL)."""
    out = {f"FL_UID_{env_name(s.name)}": str(s.uid) for s in SERVICES}
    out.update({f"FL_HOST_{env_name(name)}": host for name, host in hostnames(fed).items()})
    out.update({f"FL_URL_{env_name(name)}": url for name, url in public_urls(fed, https_port).items()})
    return out


def public_view(fed: Federation, https_port: int = 443) -> dict:
    """The public hosts' part of build/federation.json: hostnames, their URLs, the
    published HTTPS port, which zones may use each host at the edge, the researchers'
    connection name."""
    return {"hostnames": hostnames(fed),
            "urls": public_urls(fed, https_port),
            "public_https_port": https_port,
            "zones": {h.name: list(h.zones) for h in PUBLIC_HOSTS},
            "connection_name": CONNECTION_NAME}
