# JupyterHub's configuration. Static: every value comes from the settings file that
# entrypoint.py renders from the federation (FL_HUB_SETTINGS) at each start.
import base64
import json
import os
import time

c = get_config()  # noqa: F821 - provided by JupyterHub
with open(os.environ["FL_HUB_SETTINGS"]) as _handle:
    S = json.load(_handle)

# ---- listeners: the proxy (the edge's upstream) over TLS with the hub's own
# certificate; the hub's API for the proxy and the notebook servers.
c.JupyterHub.bind_url = "https://0.0.0.0:8000/"
c.JupyterHub.ssl_cert = S["tls_cert"]
c.JupyterHub.ssl_key = S["tls_key"]
c.JupyterHub.hub_bind_url = "http://0.0.0.0:8081"
c.JupyterHub.hub_connect_url = S["hub_connect_url"]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:8001"
c.ConfigurableHTTPProxy.pid_file = os.path.join(os.path.dirname(os.environ["FL_HUB_SETTINGS"]), "proxy.pid")
# The edge forwards X-Forwarded-*; the hub trusts it to build its redirect URLs.
c.JupyterHub.trusted_downstream_ips = ["0.0.0.0/0"]
c.JupyterHub.cleanup_servers = False   # notebook servers outlive a hub restart

# ---- state: PostgreSQL over TLS (verify-full against the project CA)
c.JupyterHub.db_url = S["db_url"]
# The password: libpq's PGPASSFILE, written by entrypoint.py.
c.JupyterHub.cookie_secret = S["cookie_secret"].encode()
c.JupyterHub.data_files_path = "/opt/venv/share/jupyterhub"
c.JupyterHub.template_paths = ["/opt/jupyterhub/templates"]

# ---- login: Keycloak realm flowerfl, client jupyterhub (services/keycloak)
o = S["oauth"]
c.JupyterHub.authenticator_class = "generic-oauth"
c.GenericOAuthenticator.client_id = o["client_id"]
c.GenericOAuthenticator.client_secret = o["client_secret"]
c.GenericOAuthenticator.oauth_callback_url = o["callback_url"]
c.GenericOAuthenticator.authorize_url = o["authorize_url"]
c.GenericOAuthenticator.token_url = o["token_url"]
c.GenericOAuthenticator.userdata_url = o["userdata_url"]
c.GenericOAuthenticator.logout_redirect_url = o["logout_redirect_url"]
c.GenericOAuthenticator.login_service = "the federation's single sign-on"
c.GenericOAuthenticator.scope = ["openid", "profile", "email"]
c.GenericOAuthenticator.username_claim = "preferred_username"
# The realm's group mapper sends plain names (full.path false): "jupyter_users".
c.GenericOAuthenticator.auth_state_groups_key = "oauth_user.groups"
c.GenericOAuthenticator.allowed_groups = set(o["allowed_groups"])
c.GenericOAuthenticator.admin_groups = set(o["admin_groups"])
c.GenericOAuthenticator.manage_groups = True
c.GenericOAuthenticator.enable_auth_state = True
c.GenericOAuthenticator.enable_pkce = True
c.GenericOAuthenticator.refresh_pre_spawn = True
c.GenericOAuthenticator.http_request_kwargs = {"ca_certs": S["ca_file"]}


# Flower from a notebook without a second login: a server reads its own user's auth
# state (scope admin:auth_state!user, below) for the flwr CLI (services/notebook). The
# tokens were issued to this hub's client, and Keycloak refreshes a token only for the
# client it was issued to, so the hub refreshes them: whenever the access token has
# less than REFRESH_MARGIN seconds left, at most every auth_refresh_age seconds per
# user, when the user or their server calls the hub. A refused refresh (the SSO session
# ended) means a new sign-in.
REFRESH_MARGIN = 120


def _expires_at(token: str) -> float:
    try:
        payload = token.split(".")[1]
        return float(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return 0.0


async def refresh_before_expiry(authenticator, user, auth_state):
    if not auth_state or not auth_state.get("refresh_token"):
        return None                                   # the default: a new sign-in
    if _expires_at(auth_state.get("access_token", "")) - time.time() > REFRESH_MARGIN:
        return True                                   # still fresh: nothing changes
    params = authenticator.build_refresh_token_request_params(auth_state["refresh_token"])
    try:
        token_info = await authenticator.get_token_info(None, params)
    except Exception as exc:  # noqa: BLE001 - Keycloak refused: the session is over
        authenticator.log.info(f"refreshing {user.name}'s tokens failed ({exc}): a new sign-in is needed")
        return False
    token_info.setdefault("refresh_token", auth_state["refresh_token"])
    authenticator.log.info(f"refreshed {user.name}'s tokens with the hub's client")
    return await authenticator._token_to_auth_model(token_info)


c.GenericOAuthenticator.refresh_user_hook = refresh_before_expiry
c.Authenticator.auth_refresh_age = 30

# ---- notebook servers: DockerSpawner through the filtering Docker API proxy
n = S["notebooks"]
c.JupyterHub.spawner_class = "docker"
c.DockerSpawner.client_kwargs = {"base_url": n["docker_api"]}
c.DockerSpawner.image = n["image"]
c.DockerSpawner.pull_policy = "never"          # images are built by the project
c.DockerSpawner.network_name = n["network"]
c.DockerSpawner.use_internal_ip = True
c.DockerSpawner.remove = True                  # the home volume keeps the work
c.DockerSpawner.prefix = n["prefix"]
c.DockerSpawner.name_template = "{prefix}-{username}"
c.DockerSpawner.notebook_dir = "/home/jovyan/work"
c.DockerSpawner.volumes = {f"{n['prefix']}-home-{{username}}": "/home/jovyan"}
c.DockerSpawner.mem_limit = n["mem_limit"]
c.DockerSpawner.cpu_limit = n["cpu_limit"]
# The notebook's flwr connection (services/notebook/start.py). The CA is public.
c.DockerSpawner.environment = {
    "FL_PROJECT_CA_PEM": open(S["ca_file"]).read(),
    "FL_CONTROL_ADDRESS": f"{S['control_host']}:443",
    "FL_CONNECTION_NAME": S["connection_name"],
}
if n["egress_proxy"]:
    # The internet only through the egress proxy (what federation.yaml's notebooks.egress
    # admits); the platform's own hosts are reached directly, through the edge.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        c.DockerSpawner.environment[name] = n["egress_proxy"]
    c.DockerSpawner.environment.update({"NO_PROXY": S["no_proxy"], "no_proxy": S["no_proxy"]})
c.DockerSpawner.extra_create_kwargs = {"labels": {"fl.notebook.prefix": n["prefix"]}}
c.DockerSpawner.extra_host_config = {
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges:true"],
    "pids_limit": 512,
}
if n.get("gpus"):
    # The GPU profile (compose.gpu.yml): NVIDIA GPUs for every server (-1: all of them).
    c.DockerSpawner.extra_host_config["device_requests"] = [
        {"driver": "nvidia", "count": n["gpus"], "capabilities": [["gpu"]]}]
c.Spawner.default_url = "/lab"
c.Spawner.http_timeout = 120
c.Spawner.start_timeout = 180
c.JupyterHub.concurrent_spawn_limit = n["concurrent_spawn_limit"]

# A notebook server's token may read its own user's auth state (the Keycloak tokens),
# besides what servers always have.
# (A token never has more than its owner: users may read their own auth state.)
c.Spawner.server_token_scopes = ["users:activity!user", "access:servers!server", "admin:auth_state!user"]
c.JupyterHub.load_roles = [{"name": "user", "scopes": ["self", "admin:auth_state!user"]}]

# ---- metrics: /hub/metrics only with the token of the service "prometheus" (a secret
# file), whose one scope is read:metrics; Prometheus scrapes it through the edge.
c.JupyterHub.authenticate_prometheus = True
c.JupyterHub.services = [{"name": "prometheus", "api_token": S["metrics_token"]}]
c.JupyterHub.load_roles += [{"name": "metrics", "scopes": ["read:metrics"], "services": ["prometheus"]}]

# ---- idle culling: a hub-managed service with only the scopes it needs
if n["idle_timeout"] > 0:
    c.JupyterHub.load_roles += [{
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    }]
    c.JupyterHub.services += [{
        "name": "idle-culler",
        "command": ["python3", "-m", "jupyterhub_idle_culler", f"--timeout={n['idle_timeout']}"],
    }]
