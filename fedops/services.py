"""The platform's services as the task runner sees them: user ids and certificate names.

uids match the users created in services/<name>/Dockerfile (docs/CONVENTIONS.md).
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import Federation


@dataclass(frozen=True)
class Service:
    name: str
    uid: int
    public: tuple[str, ...] = ()     # public hostname prefixes ("" is the bare domain)
    phase: int = 3                   # the task list's phase: bring-up order

    def sans(self, fed: Federation) -> list[str]:
        """Compose service name, public hostname(s), localhost and 127.0.0.1."""
        names = [self.name] + [fed.hostname(p) for p in self.public] + ["localhost"]
        return [f"DNS:{n}" for n in dict.fromkeys(names)] + ["IP:127.0.0.1"]


# In bring-up order (the task list's phases).
SERVICES: tuple[Service, ...] = (
    Service("postgres", 10010, phase=3),
    Service("keycloak", 10020, public=("auth",), phase=3),
    Service("ctlgate", 10080, phase=3),
    Service("nginx", 10030, public=("", "auth", "fleet", "control", "hub", "grafana", "prometheus"),
            phase=3),
    Service("superlink", 10040, phase=4),
    Service("jupyterhub", 10060, public=("hub",), phase=5),
    Service("prometheus", 10070, public=("prometheus",), phase=5),
)
SUPERNODE_UID = 10050
SITEPROXY_UID = 10030   # the site proxy runs from the edge's NGINX user id


def by_name(name: str) -> Service:
    for svc in SERVICES:
        if svc.name == name:
            return svc
    raise KeyError(name)


def org_sans(fed: Federation, org) -> list[str]:
    """An organisation's certificate is a client certificate at the edge and the server
    certificate of its site proxy on the site's loopback."""
    return [f"DNS:{org.service}", "DNS:localhost", "IP:127.0.0.1"]
