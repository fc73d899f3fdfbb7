import json
import os
import stat

from cryptography.hazmat.primitives import serialization

from fedops import secrets


def test_generate_creates_everything_once(fed, tmp_path):
    folder = tmp_path / "secrets"
    first = secrets.generate(fed, folder)
    assert set(first.values()) == {"created", "updated"}
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    values = {n: (folder / n).read_text() for n in secrets.PASSWORDS}
    assert all(len(v.strip()) >= 24 for v in values.values())
    assert len(set(values.values())) == len(values)          # all different
    second = secrets.generate(fed, folder)
    assert set(second.values()) == {"kept"}
    assert {n: (folder / n).read_text() for n in secrets.PASSWORDS} == values


def test_rotate_replaces_only_the_named_secret(fed, tmp_path):
    folder = tmp_path / "s"
    secrets.generate(fed, folder)
    before = {n: (folder / n).read_text() for n in secrets.PASSWORDS}
    assert secrets.generate(fed, folder, rotate=("grafana_admin_password",))["grafana_admin_password"] == "rotated"
    after = {n: (folder / n).read_text() for n in secrets.PASSWORDS}
    assert [n for n in after if after[n] != before[n]] == ["grafana_admin_password"]


def test_every_configured_user_gets_a_password_and_new_ones_are_added(fed, tmp_path):
    folder = tmp_path / "s"
    secrets.generate(fed, folder)
    users = json.loads((folder / secrets.USERS_FILE).read_text())
    assert set(users) == {u.username for u in fed.users}
    from fedops import config
    bigger = config.Federation(fed.domain, fed.ca, fed.organisations,
                               fed.users + (config.User("newbie", "n@x.org", "N", "B", "alpha", ()),))
    secrets.generate(bigger, folder)
    again = json.loads((folder / secrets.USERS_FILE).read_text())
    assert again["researcher"] == users["researcher"] and "newbie" in again


def test_supernode_keys_are_openssh_ec_p384(fed, tmp_path):
    secrets.generate(fed, tmp_path / "s")
    for org in fed.organisations:
        key_path = tmp_path / "s" / "supernodes" / f"{org.name}.key"
        assert key_path.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
        key = serialization.load_ssh_private_key(key_path.read_bytes(), password=None)
        assert key.curve.name == "secp384r1"
        pub = (tmp_path / "s" / "supernodes" / f"{org.name}.pub").read_text()
        assert pub.startswith("ecdsa-sha2-nistp384 ")
        assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o400


def test_unknown_rotation_is_an_error(fed, tmp_path):
    import pytest
    from fedops.errors import FedopsError
    with pytest.raises(FedopsError, match="unknown secret"):
        secrets.generate(fed, tmp_path / "s", rotate=("nope",))
