"""Per-method authorization (ctlgate/methods.py): the read-only role lists and reads,
only the full role starts and stops runs; through /auth as NGINX asks it."""
from __future__ import annotations

import httpx
import pytest

from ctlgate import methods
from fakekeycloak import Realm

VIEWER = {"roles": ["default-roles-flowerfl", "superlink_viewer"]}


@pytest.mark.parametrize(("uri", "name"), [
    ("/v1/control/list-runs", "list-runs"), ("/v1/control/stream-logs?x=1", "stream-logs"),
    ("/v1/control/", None), ("/v1/control/List-Runs", None), ("/v1/control/list-runs/../start-run", None),
    ("/v1/fleet/pull-messages", None), ("", None), (None, None)])
def test_the_method_is_read_from_the_original_uri(uri, name):
    assert methods.method(uri) == name


def test_read_methods_admit_both_roles_and_the_rest_only_the_full_one():
    assert methods.roles_for("/v1/control/list-runs", "superlink_user", "superlink_viewer") == \
        ("superlink_user", "superlink_viewer")
    for uri in ("/v1/control/start-run", "/v1/control/stop-run", "/v1/control/register-node",
                "/v1/control/some-future-method", None):
        assert methods.roles_for(uri, "superlink_user", "superlink_viewer") == ("superlink_user",)
    assert methods.roles_for("/v1/control/list-runs", "superlink_user", "") == ("superlink_user",)


def test_every_read_method_is_a_method_flower_has():
    from flwr.proto import control_pb2
    import re
    names = control_pb2.DESCRIPTOR.services_by_name["Control"].methods_by_name
    wire = {re.sub(r"(?<!^)(?=[A-Z])", "-", n).lower() for n in names}
    assert methods.READ_METHODS <= wire
    assert {"start-run", "stop-run"} <= wire - methods.READ_METHODS


def auth(http, base, token, uri):
    return http.get(f"{base}/auth", headers={"Authorization": f"Bearer {token}", "X-Original-URI": uri})


def test_the_read_only_role_lists_and_reads_but_may_not_start_or_stop(server, realm: Realm):
    base = f"http://{server}"
    viewer = realm.token(realm_access=VIEWER)
    with httpx.Client() as http:
        for uri in ("/v1/control/list-runs", "/v1/control/list-nodes", "/v1/control/stream-logs"):
            assert auth(http, base, viewer, uri).status_code == 200, uri
        for uri in ("/v1/control/start-run", "/v1/control/stop-run", "/v1/control/unregister-node"):
            refused = auth(http, base, viewer, uri)
            assert refused.status_code == 403, uri
            assert refused.headers["X-Ctlgate-Reason"] == "missing_role"
        # without the URI nothing is known to be read-only
        assert http.get(f"{base}/auth", headers={"Authorization": f"Bearer {viewer}"}).status_code == 403


def test_the_full_role_calls_every_method(server, realm: Realm):
    base = f"http://{server}"
    with httpx.Client() as http:
        for uri in ("/v1/control/list-runs", "/v1/control/start-run", "/v1/control/stop-run"):
            assert auth(http, base, realm.token(), uri).status_code == 200, uri
