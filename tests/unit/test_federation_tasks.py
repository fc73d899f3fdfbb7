import tomllib

from fedops import federation


def test_connection_is_written_and_replaced_keeping_other_connections(fed, tmp_path):
    (tmp_path / "config.toml").write_text(
        '[superlink]\ndefault = "local"\n\n[superlink.local]\noptions.num-supernodes = 10\n')
    federation.write_connection(tmp_path, "fl", fed)
    federation.write_connection(tmp_path, "fl", fed)          # twice: replaced, not duplicated
    data = tomllib.loads((tmp_path / "config.toml").read_text())
    assert data["superlink"]["default"] == "local"            # the user's default is kept
    assert data["superlink"]["local"]["options"]["num-supernodes"] == 10
    assert data["superlink"]["fl"]["address"] == "control.fl.localhost:443"
    assert data["superlink"]["fl"]["root-certificates"].endswith("ca/pki/ca.crt")
    assert "insecure" not in data["superlink"]["fl"]


def test_a_new_config_makes_the_connection_the_default(fed, tmp_path):
    federation.write_connection(tmp_path, "fl", fed)
    assert tomllib.loads((tmp_path / "config.toml").read_text())["superlink"]["default"] == "fl"


def test_admin_commands_run_inside_the_superlink_over_tls():
    argv = federation.admin_argv(["ls", "--format", "json"])
    assert argv[argv.index("exec"):argv.index("exec") + 2] == ["exec", "-T"]
    assert "superlink" in argv
    script = argv[-1]
    assert 'address = "127.0.0.1:8000"' in script and "root-certificates" in script
    assert "insecure" not in script
    assert script.endswith("exec flwr ls --format json")


def test_json_after_other_output_is_found():
    assert federation.parse_json('warning: x\n{"success": true, "runs": []}') == {"success": True, "runs": []}


def test_the_connection_uses_the_published_https_port(fed, monkeypatch, tmp_path):
    monkeypatch.setenv("FL_HTTPS_PORT", "8443")
    data = tomllib.loads(federation.write_connection(tmp_path, "fl", fed).read_text())
    assert data["superlink"]["fl"]["address"] == f"control.{fed.domain}:8443"
    monkeypatch.setenv("FL_HTTPS_PORT", "443")
    assert f"control.{fed.domain}:443" in federation.connection_toml("fl", fed, "/ca.crt")


def test_a_key_is_compared_in_the_form_the_superlink_stores_it(tmp_path):
    """register_all skips keys the SuperLink holds: the OpenSSH public key file, turned
    into what flwr's own `supernode register` stores (its public_key_to_bytes)."""
    from cryptography.hazmat.primitives import serialization
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes

    from fedops import federation, secrets
    _, public = secrets.new_supernode_key("org-alpha")
    stored = public_key_to_bytes(serialization.load_ssh_public_key(public.encode()))
    assert federation.pem_of(public) == stored
    assert "status != 'unregistered'" in federation.REGISTERED_KEYS_PY
