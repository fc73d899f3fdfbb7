"""services/grafana: the provisioning files have the structure Grafana expects, every
dashboard panel asks the provisioned Prometheus data source a PromQL query, and the sign-on
maps the realm's roles to Grafana's. No Docker and no Grafana: Grafana cannot be pulled
here; tests/stack/test_dashboards.py asks the live Prometheus for every query."""
from __future__ import annotations

import configparser
import json
import re

import jmespath
import pytest
import yaml

import grafana_dashboards as gd
from fedops import config, paths, render
from testcerts import load_entrypoint

HERE = gd.GRAFANA_DIR
PANEL_TYPES = {"timeseries", "stat", "table", "bargauge", "gauge", "barchart", "state-timeline"}
DASHBOARD_UIDS = {"fl-federation-overview", "fl-infrastructure", "fl-certificates", "fl-gpu"}


def ini() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True, comment_prefixes=(";", "#"),
                                       inline_comment_prefixes=None)
    parser.read_string((HERE / "grafana.ini").read_text())
    return parser


@pytest.fixture(scope="module")
def boards() -> dict[str, dict]:
    return gd.dashboards()


# ------------------------------------------------------------------ provisioning files
def test_one_prometheus_data_source_with_the_uid_the_panels_name():
    doc = yaml.safe_load((HERE / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert doc["apiVersion"] == 1
    [ds] = doc["datasources"]
    assert {k: ds[k] for k in ("uid", "type")} == gd.DATASOURCE
    assert ds["url"] == "http://prometheus:9090" and ds["access"] == "proxy"
    assert ds["isDefault"] is True and ds["editable"] is False
    # $__rate_interval follows Prometheus' scrape interval
    assert ds["jsonData"]["timeInterval"] == "${FL_PROMETHEUS_SCRAPE_INTERVAL}"


def test_the_dashboard_provider_reads_the_folder_the_image_holds():
    doc = yaml.safe_load((HERE / "provisioning" / "dashboards" / "federation.yml").read_text())
    assert doc["apiVersion"] == 1
    [provider] = doc["providers"]
    assert provider["type"] == "file" and provider["allowUiUpdates"] is False and provider["disableDeletion"] is True
    copies = dict(re.findall(r"^COPY (\S+) (\S+)$", (HERE / "Dockerfile").read_text(), re.M))
    assert copies["dashboards/"].rstrip("/") == provider["options"]["path"]
    assert copies["provisioning/dashboards/"] == "/etc/grafana/provisioning/dashboards/"
    assert copies["provisioning/datasources/"] == "/etc/grafana/provisioning/datasources/"
    home = ini()["dashboards"]["default_home_dashboard_path"]
    assert home.startswith(provider["options"]["path"] + "/")
    assert (HERE / "dashboards" / home.rsplit("/", 1)[1]).is_file()


def test_four_dashboards_with_unique_uids_and_titles(boards):
    assert {d["uid"] for d in boards.values()} == DASHBOARD_UIDS
    assert len({d["title"] for d in boards.values()}) == len(boards) == 4
    for name, d in boards.items():
        assert len(d["uid"]) <= 40 and isinstance(d["schemaVersion"], int), name
        assert d["editable"] is False and "federation" in d["tags"], name
        assert "id" not in d or d["id"] is None, f"{name}: a provisioned dashboard has no database id"


# ------------------------------------------------------------------ panels
def test_every_panel_asks_the_provisioned_data_source(boards):
    for name, d in boards.items():
        ids = [p["id"] for p in gd.panels(d)]
        assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 0 for i in ids), f"{name}: panel ids"
        for p in gd.panels(d):
            where = f"{name} #{p['id']} {p.get('title')!r}"
            assert p["type"] in PANEL_TYPES, where          # no rows or text: every panel is a query
            assert p["datasource"] == gd.DATASOURCE, where
            assert p["targets"], f"{where}: no query"
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)) and all(refs), where
            for t in p["targets"]:
                assert t["datasource"] == gd.DATASOURCE, where
                assert t["expr"].strip(), f"{where}: empty PromQL"
            # `instant` and `range` say which query a panel runs: exactly one of them
            assert all(t["instant"] != t["range"] for t in p["targets"]), where


def test_panels_fit_the_grid_without_overlapping(boards):
    for name, d in boards.items():
        cells = set()
        for p in gd.panels(d):
            g = p["gridPos"]
            assert g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24, f"{name} #{p['id']}"
            mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert not cells & mine, f"{name} #{p['id']} overlaps another panel"
            cells |= mine


def test_queries_are_balanced_promql(boards):
    for name, d in boards.items():
        for q in gd.queries(name, d):
            expr = gd.substitute(q.expr, d, "30s")
            assert "$" not in expr, q
            assert expr.count('"') % 2 == 0, q
            for left, right in ("()", "{}", "[]"):
                assert expr.count(left) == expr.count(right), q


def test_every_variable_is_defined_all_valued_and_a_regex_matcher(boards):
    """What lets the stack test substitute variables the documented way."""
    for name, d in boards.items():
        defined = gd.defined_variables(d)
        for var in defined.values():
            assert var["type"] == "query" and var["datasource"] == gd.DATASOURCE, (name, var["name"])
            assert var["includeAll"] is True and var["allValue"] == ".*", (name, var["name"])
            selector, label = gd.label_values(var)
            assert label == var["name"] and var["definition"] == var["query"]["query"], (name, var["name"])
        used = set()
        for q in gd.queries(name, d):
            names = gd.variables_in(q.expr)
            assert names <= set(defined) | set(gd.BUILTINS), f"{q}: undefined {names - set(defined)}"
            for v in names & set(defined):
                # only as a regex matcher, so that ".*" (All) and multi-values work
                assert re.findall(r'\w+\s*(=~|=|!=|!~)\s*"\$\{?' + v + r'\b', q.expr) == \
                    ["=~"] * len(re.findall(r"\$\{?" + v + r"\b", q.expr)), q
            used |= names
        assert set(defined) <= used, f"{name}: variables no query uses: {set(defined) - used}"


def test_the_gpu_dashboard_reads_the_counters_dcgm_exports(boards):
    counters = {line.split(",")[0].strip()
                for line in (paths.SERVICES_DIR / "dcgm" / "default-counters.csv").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    used = {m for q in gd.queries("gpu", boards["gpu"]) for m in re.findall(r"DCGM_FI_\w+", q.expr)}
    assert used and used <= counters, used - counters


# ------------------------------------------------------------------ grafana.ini
def test_the_database_is_postgres_over_verified_tls():
    db = ini()["database"]
    assert (db["type"], db["host"], db["name"], db["user"]) == ("postgres", "postgres:5432", "grafana", "grafana")
    assert db["ssl_mode"] == "verify-full" and db["ca_cert_path"] == "/etc/fl/tls/ca.crt"
    assert db["password"] == "$__file{/run/secrets/grafana_db_password}"


def test_no_secret_is_in_the_file():
    cfg = ini()
    for section, key in (("security", "admin_password"), ("security", "secret_key"),
                         ("database", "password"), ("auth.generic_oauth", "client_secret")):
        assert re.fullmatch(r"\$__file\{/run/secrets/\w+\}", cfg[section][key]), (section, key)


def test_nothing_is_anonymous_or_fetched_from_outside():
    cfg = ini()
    assert cfg["auth.anonymous"].getboolean("enabled") is False
    assert cfg["users"].getboolean("allow_sign_up") is False
    for key in ("reporting_enabled", "check_for_updates", "check_for_plugin_updates"):
        assert cfg["analytics"].getboolean(key) is False, key
    assert cfg["plugins"].getboolean("preinstall_disabled") is True
    assert cfg["security"].getboolean("cookie_secure") is True


@pytest.fixture(scope="module")
def realm():
    kc = load_entrypoint(paths.SERVICES_DIR / "keycloak" / "entrypoint.py", "keycloak_for_grafana")
    fed = json.loads(render.federation_json(config.parse(yaml.safe_load(paths.CONFIG.read_text())), https_port=443))
    secrets = {"keycloak_users": {u["username"]: "p" * 16 for u in fed["users"]},
               **{name: "s" * 24 for name in kc.CLIENT_SECRETS.values()}}
    return kc, kc.render_realm(fed, secrets), fed


def test_sign_on_is_the_realms_grafana_client(realm):
    kc, doc, fed = realm
    oauth = ini()["auth.generic_oauth"]
    client = next(c for c in doc["clients"] if c["clientId"] == oauth["client_id"])
    assert oauth.getboolean("enabled") and oauth.getboolean("use_pkce")
    assert client["attributes"]["pkce.code.challenge.method"] == "S256"
    # Grafana's redirect URI is its root_url + login/generic_oauth: the one the client allows
    root = ini()["server"]["root_url"].replace("${FL_URL_GRAFANA}", fed["urls"]["grafana"])
    assert client["redirectUris"] == [root + "login/generic_oauth"]
    assert oauth["auth_url"].replace("${FL_URL_AUTH}", fed["urls"]["auth"]) == \
        f"{fed['urls']['auth']}/realms/{kc.REALM}/protocol/openid-connect/auth"
    for key, endpoint in (("token_url", "token"), ("api_url", "userinfo")):
        assert oauth[key] == f"https://${{FL_HOST_AUTH}}/realms/{kc.REALM}/protocol/openid-connect/{endpoint}"
    assert oauth["tls_client_ca"] == "/etc/fl/tls/ca.crt"
    # the roles the mapping reads are in the ID token and userinfo, under `roles`
    mapper = next(m for m in client["protocolMappers"] if m["protocolMapper"] == "oidc-usermodel-realm-role-mapper")
    assert mapper["config"]["claim.name"] == "roles"
    assert mapper["config"]["id.token.claim"] == mapper["config"]["userinfo.token.claim"] == "true"
    logout = ini()["auth"]["signout_redirect_url"].replace("${FL_URL_AUTH}", fed["urls"]["auth"]) \
        .replace("${FL_URL_GRAFANA}", fed["urls"]["grafana"])
    assert logout.endswith("post_logout_redirect_uri=" + client["attributes"]["post.logout.redirect.uris"])


@pytest.mark.parametrize(("roles", "grafana_role"), [
    (["grafana_admin"], "Admin"),
    (["grafana_admin", "grafana_editor", "monitoring_viewer"], "Admin"),
    (["grafana_editor"], "Editor"),
    (["monitoring_viewer", "grafana_editor"], "Editor"),
    (["monitoring_viewer", "default-roles-flowerfl"], "Viewer"),
    (["superlink_user", "jupyter_user"], None),      # refused (role_attribute_strict)
    ([], None),
])
def test_realm_roles_map_to_grafana_roles(roles, grafana_role):
    oauth = ini()["auth.generic_oauth"]
    assert oauth.getboolean("role_attribute_strict") is True
    result = jmespath.search(oauth["role_attribute_path"], {"roles": roles})
    assert (result or None) == grafana_role


def test_the_mapped_roles_exist_in_the_realm_with_groups(realm):
    kc, doc, _ = realm
    path = ini()["auth.generic_oauth"]["role_attribute_path"]
    named = set(re.findall(r"contains\(roles\[\*\], '(\w+)'\)", path))
    assert named == {"grafana_admin", "grafana_editor", "monitoring_viewer"}
    assert named <= {r["name"] for r in doc["roles"]["realm"]}
    granted = {role for roles in kc.GROUP_ROLES.values() for role in roles}
    assert named <= granted                      # a group gives each of them
