"""Per-method authorization of the Control API: which realm roles may call a method.

The flwr CLI calls ``POST /v1/control/<method>`` (kebab-case of the protobuf method,
``flwr/supercore/protobuf/client.py``); NGINX hands the original URI to ``/auth`` as
``X-Original-URI``. Methods that only read (list runs and nodes, stream logs, pull
artifacts, show federations) are open to the read-only role as well as to the full
role; every other method, and any URI that is not a Control API method, needs the full
role (``superlink_user``): a method a future Flower adds is closed until listed here.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

PREFIX = "/v1/control/"
# flwr 1.42's Control service (flwr/proto/control.proto), the methods that change
# nothing, as they appear on the wire.
READ_METHODS = frozenset({
    "list-runs", "stream-logs", "stream-run-events", "pull-artifacts", "list-nodes",
    "list-run-series", "get-run-series", "list-run-series-events", "list-automations",
    "list-federations", "show-federation", "list-apps", "list-app-associations",
    "list-connectors", "list-invitations",
})
_METHOD_RE = re.compile(r"^[a-z][a-z0-9-]*$")


def method(original_uri: str | None) -> str | None:
    """The Control API method an original URI calls, or None."""
    if not original_uri:
        return None
    path = urlsplit(original_uri).path
    if not path.startswith(PREFIX):
        return None
    name = path[len(PREFIX):]
    return name if _METHOD_RE.match(name) else None


def roles_for(original_uri: str | None, role: str, read_role: str | None) -> tuple[str, ...]:
    """The realm roles of which a token must hold one to call this URI."""
    if read_role and method(original_uri) in READ_METHODS:
        return (role, read_role)
    return (role,)
