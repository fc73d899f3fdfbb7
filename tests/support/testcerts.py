"""Test helpers shared by the unit tests: real keys and certificates made with the
`cryptography` package, written as PEM files, and service entrypoints loaded by path.

Importable as `testcerts` from every test: pyproject.toml's [tool.pytest.ini_options]
puts tests/support on sys.path (`pythonpath`).

A CA or a leaf is a `(key, certificate)` pair. Keys are EC (P-256 unless a curve is
given); certificates are signed with SHA-256 and valid from a day ago for 30 days.
"""
from __future__ import annotations

import importlib.util
from datetime import datetime, timedelta, timezone
from ipaddress import ip_address
from pathlib import Path
from types import ModuleType
from typing import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyAndCert = tuple[ec.EllipticCurvePrivateKey, x509.Certificate]


def load_entrypoint(path: Path, name: str) -> ModuleType:
    """Load a service's entrypoint script (a file, not a package) as module `name`.

    The module is executed afresh on each call and not registered in sys.modules.
    """
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    """A new EC private key on `curve` (default P-256, e.g. ec.SECP384R1() for P-384)."""
    return ec.generate_private_key(curve or ec.SECP256R1())


def common_name(cn: str) -> x509.Name:
    """An X.509 name with only a common name."""
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str = "Test Project CA") -> KeyAndCert:
    """A self-signed CA: critical BasicConstraints (CA) and KeyUsage (certificate and CRL
    signing), a SubjectKeyIdentifier."""
    key = make_key()
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(common_name(cn)).issuer_name(common_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_leaf(ca: KeyAndCert, cn: str, dns: Iterable[str] = (), ips: Iterable[str] = (),
              expired: bool = False) -> KeyAndCert:
    """A certificate issued by `ca` as `invoke ca.deploy` issues it (serverClient: EKU
    serverAuth and clientAuth, not a CA), with the SANs DNS:`dns` and IP:`ips` (none when
    both are empty). `expired`: valid from 60 days ago until yesterday."""
    ca_key, ca_cert = ca
    key = make_key()
    now = datetime.now(timezone.utc)
    start, end = ((now - timedelta(days=60), now - timedelta(days=1)) if expired
                  else (now - timedelta(days=1), now + timedelta(days=30)))
    builder = (x509.CertificateBuilder()
               .subject_name(common_name(cn)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                     ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ip_address(i)) for i in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def pem_cert(cert: x509.Certificate) -> bytes:
    """The certificate in PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def pem_key(key, fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8) -> bytes:
    """The private key in PEM, unencrypted: PKCS#8 unless `fmt` says otherwise
    (serialization.PrivateFormat.OpenSSH for an OpenSSH private key)."""
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def write_tls(folder: Path, ca: KeyAndCert, leaf: KeyAndCert, key=None) -> Path:
    """Write ca.crt, tls.crt and tls.key (the leaf's key, or `key` in its place) into
    `folder` (made if missing), the layout `invoke ca.deploy` gives a service; return it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ca.crt").write_bytes(pem_cert(ca[1]))
    (folder / "tls.crt").write_bytes(pem_cert(leaf[1]))
    (folder / "tls.key").write_bytes(pem_key(key or leaf[0]))
    return folder
