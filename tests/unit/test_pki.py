"""The project CA against real easy-rsa and OpenSSL (no Docker)."""
import os
import stat
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from fedops import config, pki, prepare, services
from fedops.errors import FedopsError


@pytest.fixture(scope="module")
def fed_module():
    import yaml
    return config.parse(yaml.safe_load(config.paths.CONFIG.read_text()))


@pytest.fixture(scope="module")
def ca(tmp_path_factory, fed_module):
    runner = pki.find_host_easyrsa()
    assert runner, "easy-rsa must be installed on the host for these tests (apt-get install easy-rsa)"
    folder = tmp_path_factory.mktemp("ca") / "pki"
    ca = pki.PKI(fed_module, folder, runner=pki.default_runner(folder, mode="host"))
    assert ca.init() is True
    prepare.issue_all(fed_module, ca)
    return ca


def openssl_verify(ca, cert, *extra):
    return subprocess.run(["openssl", "verify", "-CAfile", str(ca.ca_cert), *extra, str(cert)],
                          capture_output=True, text=True)


def test_ca_is_ec_p384_with_the_configured_subject(ca, fed_module):
    cert = pki.load_cert(ca.ca_cert)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp384r1"
    subject = cert.subject.rfc4514_string()
    assert f"CN={fed_module.ca.common_name}" in subject and "C=AU" in subject
    assert cert.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value.ca


def test_init_again_keeps_the_same_ca(ca):
    before = ca.ca_cert.read_bytes()
    assert ca.init() is False
    assert ca.ca_cert.read_bytes() == before


def test_a_crl_exists_from_the_start(ca):
    crl = x509.load_pem_x509_crl(ca.crl.read_bytes())
    assert crl.next_update_utc > pki.now()


@pytest.mark.parametrize("name", [s.name for s in services.with_certificates()])
def test_server_certificates_verify_and_carry_the_sans(ca, fed_module, name):
    path = ca.cert(name)
    assert openssl_verify(ca, path).returncode == 0
    cert = pki.load_cert(path)
    assert sorted(pki.cert_sans(cert)) == sorted(services.by_name(name).sans(fed_module))
    assert f"DNS:{name}" in pki.cert_sans(cert) and "DNS:localhost" in pki.cert_sans(cert)
    assert "IP:127.0.0.1" in pki.cert_sans(cert)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime.days <= config.MAX_LEAF_DAYS
    eku = cert.extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert cert.public_key().curve.name == "secp384r1"


def test_edge_certificate_covers_every_public_hostname(ca, fed_module):
    sans = pki.cert_sans(pki.load_cert(ca.cert("nginx")))
    for prefix in ("auth", "fleet", "control", "hub", "grafana", "prometheus"):
        assert f"DNS:{prefix}.{fed_module.domain}" in sans
    assert f"DNS:{fed_module.domain}" in sans


def test_organisation_certificates_are_client_certificates(ca, fed_module):
    for org in fed_module.organisations:
        cert = pki.load_cert(ca.cert(org.cert_name))
        eku = cert.extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE).value
        assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
        assert f"O={org.display_name}" in cert.subject.rfc4514_string()
        assert openssl_verify(ca, ca.cert(org.cert_name), "-purpose", "sslclient").returncode == 0


def test_issue_is_idempotent_and_reissues_on_san_change(ca, fed_module):
    assert set(prepare.issue_all(fed_module, ca).values()) == {"kept"}
    serial = pki.load_cert(ca.cert("prometheus")).serial_number
    assert ca.ensure("prometheus", ["DNS:prometheus", "DNS:metrics.example.org"]) == "reissued"
    assert pki.load_cert(ca.cert("prometheus")).serial_number != serial
    crl = x509.load_pem_x509_crl(ca.crl.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None   # superseded


def test_revoked_certificate_fails_crl_check_and_is_not_reissued(ca, fed_module):
    path = ca.cert("org-charlie")
    old = path.read_bytes()
    ca.revoke("org-charlie", remember=True)
    (ca.dir / "old.crt").write_bytes(old)
    result = openssl_verify(ca, ca.dir / "old.crt", "-crl_check", "-CRLfile", str(ca.crl))
    assert result.returncode != 0 and "revoked" in (result.stdout + result.stderr)
    assert ca.ensure("org-charlie", ["DNS:supernode-charlie"], kind="serverClient") == "revoked"
    rows = {r.name: r for r in pki.status(ca)[0]}
    assert rows["org-charlie"].state == "REVOKED"     # listed by ca.status although not issued
    ca.reinstate("org-charlie")
    assert ca.ensure("org-charlie", ["DNS:supernode-charlie"], kind="serverClient") == "issued"


def test_deploy_gives_the_key_to_the_service_user_only(ca, tmp_path):
    dest = tmp_path / "deploy" / "postgres"
    calls = []
    pki.deploy(ca, "postgres", dest, 10010, chown=lambda p, uid: calls.append((p.name, uid)))
    assert sorted(p.name for p in dest.iterdir()) == ["ca.crt", "crl.pem", "tls.crt", "tls.key"]
    assert stat.S_IMODE(os.stat(dest / "tls.key").st_mode) == 0o400
    assert stat.S_IMODE(os.stat(dest / "tls.crt").st_mode) == 0o444
    assert calls == [("tls.key", 10010)]
    assert (dest / "tls.key").read_bytes() == ca.key("postgres").read_bytes()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root (CI runs as root)")
def test_deploy_chowns_the_key_for_real(ca, tmp_path):
    dest = tmp_path / "real"
    pki.deploy(ca, "superlink", dest, 10040)
    assert os.stat(dest / "tls.key").st_uid == 10040
    pki.deploy(ca, "superlink", dest, 10040)   # again: replaces nothing, still works
    assert os.stat(dest / "tls.key").st_uid == 10040


def test_status_lists_every_certificate(ca):
    rows, next_update = pki.status(ca)
    names = {r.name for r in rows}
    assert {"ca", "postgres", "nginx", "org-alpha"} <= names
    assert all(r.verifies for r in rows)
    assert next_update is not None


def test_missing_ca_says_run_ca_init(tmp_path, fed_module):
    with pytest.raises(FedopsError, match="invoke ca.init"):
        pki.PKI(fed_module, tmp_path / "nothing", runner=pki.default_runner(tmp_path / "nothing", mode="host")).ensure("x", ["DNS:x"])


def test_certificate_from_another_ca_does_not_verify(ca, tmp_path, fed_module):
    other = pki.PKI(fed_module, tmp_path / "other", runner=pki.default_runner(tmp_path / "other", mode="host"))
    other.init()
    other.ensure("postgres", ["DNS:postgres"])
    assert openssl_verify(ca, other.cert("postgres")).returncode != 0
    assert not pki.verifies(pki.load_cert(other.cert("postgres")), pki.load_cert(ca.ca_cert))


def test_a_crl_close_to_its_next_update_is_renewed(ca):
    assert ca.ensure_crl_fresh() is False            # fresh: kept
    before = ca.crl.read_bytes()
    import datetime as dt
    from unittest import mock
    later = pki.now() + dt.timedelta(days=ca.fed.ca.crl_days - 10)
    with mock.patch.object(pki, "now", return_value=later):
        assert ca.ensure_crl_fresh() is True
    assert ca.crl.read_bytes() != before


def test_certificates_pass_strict_x509_verification(ca):
    """Python 3.13 clients (flwr in the containers) verify with VERIFY_X509_STRICT:
    the CA's basicConstraints must be critical, key identifiers present."""
    ca_cert = pki.load_cert(ca.ca_cert)
    assert ca_cert.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).critical
    assert ca_cert.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE).critical
    for name in ("nginx", "org-alpha"):
        result = openssl_verify(ca, ca.cert(name), "-x509_strict")
        assert result.returncode == 0, result.stdout + result.stderr
        leaf = pki.load_cert(ca.cert(name))
        leaf.extensions.get_extension_for_oid(ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
        leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_KEY_IDENTIFIER)


def test_deploy_trust_copies_the_ca_and_the_crl_only(ca, tmp_path):
    dest = tmp_path / "deploy" / "fl-exporter"
    assert pki.deploy_trust(ca, dest) is True
    assert sorted(p.name for p in dest.iterdir()) == ["ca.crt", "crl.pem"]
    assert (dest / "crl.pem").read_bytes() == ca.crl.read_bytes()
    assert oct((dest / "crl.pem").stat().st_mode & 0o777) == "0o444"
    assert pki.deploy_trust(ca, dest) is False          # unchanged: nothing replaced
    ca.gen_crl()                                        # a new CRL reaches it like every folder
    assert pki.refresh_crl(ca, tmp_path / "deploy") == [dest]
    assert (dest / "crl.pem").read_bytes() == ca.crl.read_bytes()
