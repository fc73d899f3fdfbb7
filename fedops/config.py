"""The federation's description: federation.yaml, overridden by federation.local.yaml.

Validation happens here, once, with messages that name the file, the key and the fix.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import paths
from .errors import FedopsError

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")
LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
USERNAME_RE = re.compile(r"^[a-z][a-z0-9._-]{1,62}$")
GROUPS = ("jupyter_users", "jupyter_admins", "superlink_users", "superlink_viewers", "monitoring_viewers")
MAX_LEAF_DAYS = 366  # Mozilla's (and the CA/Browser Forum's direction) upper bound


@dataclass(frozen=True)
class CA:
    common_name: str
    organisation: str
    unit: str
    country: str
    province: str
    city: str
    email: str
    ca_days: int = 3650
    cert_days: int = 365
    crl_days: int = 180


@dataclass(frozen=True)
class Organisation:
    name: str
    display_name: str
    partition_id: int

    @property
    def service(self) -> str:
        """The Compose service of this site's SuperNode."""
        return f"supernode-{self.name}"

    @property
    def cert_name(self) -> str:
        """The easy-rsa entity (and deploy folder) of this site's client certificate."""
        return f"org-{self.name}"


@dataclass(frozen=True)
class User:
    username: str
    email: str
    first_name: str
    last_name: str
    organisation: str
    groups: tuple[str, ...]


@dataclass(frozen=True)
class Notebooks:
    """Researchers' notebook servers (JupyterHub, services/jupyterhub)."""
    cpu_limit: float = 1.0              # CPUs per server
    mem_limit: str = "2G"               # memory per server (Docker's units: 512M, 2G)
    idle_timeout: int = 3600            # seconds without activity before a server is stopped (0: never)
    concurrent_spawn_limit: int = 20    # servers starting at once (the OPS manual's figure)
    # what servers may reach on the internet, through the egress proxy: nothing (the
    # default), ("*",) for any public destination, or host names / .domains
    egress: tuple[str, ...] = ()


@dataclass(frozen=True)
class Federation:
    domain: str
    ca: CA
    organisations: tuple[Organisation, ...]
    users: tuple[User, ...] = field(default=())
    notebooks: Notebooks = field(default_factory=Notebooks)

    def hostname(self, prefix: str = "") -> str:
        return f"{prefix}.{self.domain}" if prefix else self.domain

    def organisation(self, name: str) -> Organisation:
        for org in self.organisations:
            if org.name == name:
                return org
        known = ", ".join(o.name for o in self.organisations)
        raise FedopsError(
            f"no organisation named {name!r} in the federation (known: {known})",
            "check the spelling, or add it under 'organisations:' in federation.local.yaml",
        )

    def public(self) -> dict[str, Any]:
        """The non-secret view handed to containers as /etc/fl/federation.json."""
        return {
            "domain": self.domain,
            "organisations": [
                {"name": o.name, "display_name": o.display_name,
                 "partition_id": o.partition_id}
                for o in self.organisations
            ],
            "num_partitions": len(self.organisations),
            "users": [
                {"username": u.username, "email": u.email, "first_name": u.first_name,
                 "last_name": u.last_name, "organisation": u.organisation,
                 "groups": list(u.groups)}
                for u in self.users
            ],
            "notebooks": {"cpu_limit": self.notebooks.cpu_limit, "mem_limit": self.notebooks.mem_limit,
                          "idle_timeout": self.notebooks.idle_timeout,
                          "concurrent_spawn_limit": self.notebooks.concurrent_spawn_limit,
                          "egress": list(self.notebooks.egress)},
        }


def deep_merge(base: dict, override: dict) -> dict:
    """Dicts merge key by key; anything else (lists included) is replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise FedopsError(f"{path} is missing", "restore it with: git checkout -- federation.yaml")
    except yaml.YAMLError as exc:
        raise FedopsError(f"{path.name} is not valid YAML: {exc}", f"fix the syntax in {path}")
    if not isinstance(data, dict):
        raise FedopsError(f"{path.name} must be a mapping of keys to values", f"fix {path}")
    return data


def load(config: Path | None = None, local: Path | None = None) -> Federation:
    """Read, merge and validate the project configuration."""
    config = config or paths.CONFIG
    local = local or paths.LOCAL_CONFIG
    data = _read_yaml(config)
    if local.exists():
        data = deep_merge(data, _read_yaml(local))
    return parse(data, source=local.name if local.exists() else config.name)


def _need(data: dict, key: str, where: str, source: str) -> Any:
    if key not in data or data[key] in (None, ""):
        raise FedopsError(f"{source}: '{where}{key}' is missing", f"set '{where}{key}' in {source}")
    return data[key]


def _int(value: Any, where: str, source: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise FedopsError(f"{source}: '{where}' must be a whole number from {lo} to {hi}, not {value!r}",
                          f"fix '{where}' in {source}")
    return value


def parse(data: dict, source: str = "federation.yaml") -> Federation:
    domain = str(_need(data, "domain", "", source)).lower().rstrip(".")
    if not all(LABEL_RE.match(label) for label in domain.split(".")) or "." not in domain:
        raise FedopsError(f"{source}: domain {domain!r} is not a DNS name with at least two labels",
                          "use something like fl.localhost or fl.example.org")

    raw_ca = _need(data, "ca", "", source)
    if not isinstance(raw_ca, dict):
        raise FedopsError(f"{source}: 'ca' must be a mapping", "see federation.yaml for its keys")
    ca_fields = {k: str(_need(raw_ca, k, "ca.", source))
                 for k in ("common_name", "organisation", "unit", "country", "province", "city", "email")}
    if not re.fullmatch(r"[A-Z]{2}", ca_fields["country"]):
        raise FedopsError(f"{source}: 'ca.country' must be a two-letter ISO code such as AU, "
                          f"not {ca_fields['country']!r}", f"fix 'ca.country' in {source}")
    ca = CA(**ca_fields,
            ca_days=_int(raw_ca.get("ca_days", 3650), "ca.ca_days", source, 30, 7300),
            cert_days=_int(raw_ca.get("cert_days", 365), "ca.cert_days", source, 1, MAX_LEAF_DAYS),
            crl_days=_int(raw_ca.get("crl_days", 180), "ca.crl_days", source, 1, 3650))

    raw_orgs = data.get("organisations") or []
    if not isinstance(raw_orgs, list) or not raw_orgs:
        raise FedopsError(f"{source}: 'organisations' must list at least one organisation",
                          "add entries like '- name: alpha' under 'organisations:'")
    orgs: list[Organisation] = []
    for i, raw in enumerate(raw_orgs):
        raw = raw if isinstance(raw, dict) else {"name": raw}
        name = str(raw.get("name", ""))
        if not NAME_RE.match(name):
            raise FedopsError(
                f"{source}: organisation name {name!r} is not allowed",
                "use 2-32 lower-case letters, digits or '-', starting with a letter (it becomes a "
                "service name, a certificate name and a DNS label)")
        if any(o.name == name for o in orgs):
            raise FedopsError(f"{source}: organisation {name!r} is listed twice", "remove one of them")
        orgs.append(Organisation(name=name, display_name=str(raw.get("display_name") or name),
                                 partition_id=i))

    users: list[User] = []
    org_names = {o.name for o in orgs}
    for raw in data.get("users") or []:
        username = str(raw.get("username", ""))
        if not USERNAME_RE.match(username):
            raise FedopsError(f"{source}: username {username!r} is not allowed",
                              "use 2-63 lower-case letters, digits, '.', '_' or '-'")
        if any(u.username == username for u in users):
            raise FedopsError(f"{source}: user {username!r} is listed twice", "remove one of them")
        org = str(raw.get("organisation", ""))
        if org not in org_names:
            raise FedopsError(
                f"{source}: user {username!r} names organisation {org!r}, which is not in "
                f"'organisations' ({', '.join(sorted(org_names))})",
                "fix the user's organisation or add the organisation")
        groups = tuple(raw.get("groups") or ())
        bad = [g for g in groups if g not in GROUPS]
        if bad:
            raise FedopsError(f"{source}: user {username!r} has unknown group(s) {bad}",
                              f"use groups from {list(GROUPS)}")
        users.append(User(username=username, email=str(raw.get("email") or f"{username}@example.org"),
                          first_name=str(raw.get("first_name") or username),
                          last_name=str(raw.get("last_name") or ""), organisation=org, groups=groups))
    return Federation(domain=domain, ca=ca, organisations=tuple(orgs), users=tuple(users),
                      notebooks=parse_notebooks(data.get("notebooks") or {}, source))


EGRESS_DOMAIN_RE = re.compile(r"^\.?([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def parse_egress(raw: Any, source: str) -> tuple[str, ...]:
    """notebooks.egress: [] (nothing), ["*"] (any public destination) or host names and
    .domains (a leading dot admits subdomains)."""
    hint = (f"set 'notebooks.egress' in {source} to [] (no internet), [\"*\"] (any public "
            "destination) or a list of host names such as [example.org, .example.ac.uk]")
    if raw is None or raw is False:
        return ()
    if raw is True:
        return ("*",)
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise FedopsError(f"{source}: 'notebooks.egress' must be a list of host names, not {raw!r}", hint)
    items = tuple(dict.fromkeys(x.strip().lower() for x in raw if x.strip()))
    if "*" in items and len(items) > 1:
        raise FedopsError(f"{source}: 'notebooks.egress' lists '*' (any destination) with other names", hint)
    bad = [x for x in items if x != "*" and not EGRESS_DOMAIN_RE.match(x)]
    if bad:
        raise FedopsError(f"{source}: 'notebooks.egress' has {', '.join(map(repr, bad))}, not host names", hint)
    return items


def parse_notebooks(raw: Any, source: str) -> Notebooks:
    if not isinstance(raw, dict):
        raise FedopsError(f"{source}: 'notebooks' must be a mapping", "see federation.yaml for its keys")
    unknown = sorted(set(raw) - set(Notebooks.__dataclass_fields__))
    if unknown:
        raise FedopsError(f"{source}: unknown key(s) under 'notebooks': {', '.join(unknown)}",
                          f"use {', '.join(Notebooks.__dataclass_fields__)}")
    d = Notebooks()
    cpu = raw.get("cpu_limit", d.cpu_limit)
    if isinstance(cpu, bool) or not isinstance(cpu, (int, float)) or not 0 < cpu <= 256:
        raise FedopsError(f"{source}: 'notebooks.cpu_limit' must be a number of CPUs above 0, not {cpu!r}",
                          f"fix 'notebooks.cpu_limit' in {source}, for example 1.5")
    mem = str(raw.get("mem_limit", d.mem_limit))
    if not re.fullmatch(r"[1-9][0-9]*[KMG]?", mem):
        raise FedopsError(f"{source}: 'notebooks.mem_limit' {mem!r} is not a memory size",
                          f"fix 'notebooks.mem_limit' in {source}, for example 2G or 512M")
    return Notebooks(cpu_limit=float(cpu), mem_limit=mem, egress=parse_egress(raw.get("egress", []), source),
                     idle_timeout=_int(raw.get("idle_timeout", d.idle_timeout), "notebooks.idle_timeout",
                                       source, 0, 30 * 86400),
                     concurrent_spawn_limit=_int(raw.get("concurrent_spawn_limit", d.concurrent_spawn_limit),
                                                 "notebooks.concurrent_spawn_limit", source, 1, 1000))
