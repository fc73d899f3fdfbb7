"""The project certificate authority: easy-rsa in ./ca/pki, driven from Python.

easy-rsa runs on the host when installed (Debian: /usr/share/easy-rsa/easyrsa), otherwise
in the small `ca-tools` container with ./ca mounted. Either way the CA key stays in
./ca/pki/private: it never enters a service container, an image or git.
"""
from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID

from . import compose, ownership, paths
from .config import Federation
from .errors import FedopsError

HOST_EASYRSA = ("easyrsa", "/usr/share/easy-rsa/easyrsa", "/usr/local/share/easy-rsa/easyrsa")
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass
class Runner:
    """Runs easy-rsa; `pki` is the PKI folder as easy-rsa itself sees it. On the host,
    `argv` is the easyrsa command; in a container it is the `docker compose ... run`
    prefix, and `service` the ca-tools service whose image holds easy-rsa."""
    argv: list[str]
    pki: str
    where: str                     # "host" or "container", for messages
    ext_dir: str = str(paths.X509_TYPES)   # the project's certificate profiles
    service: str = ""

    def command(self, args: Sequence[str], env: dict[str, str]) -> tuple[list[str], dict[str, str] | None]:
        """The command line and its environment (None: inherit; the container gets the
        variables as `-e` options, which `docker compose run` takes before the service)."""
        env = {**env, "EASYRSA_EXT_DIR": self.ext_dir}
        if self.where == "container":
            envargs = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
            return [*self.argv, *envargs, self.service, "easyrsa", f"--pki-dir={self.pki}", *args], \
                compose.environment()
        return [*self.argv, f"--pki-dir={self.pki}", *args], {**os.environ, **ssl_conf(self), **env}

    def __call__(self, args: Sequence[str], env: dict[str, str]) -> str:
        cmd, run_env = self.command(args, env)
        if self.where == "container":
            (paths.instance() / "ca").mkdir(parents=True, exist_ok=True)   # mounted at /ca
        proc = subprocess.run(cmd, env=run_env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
            raise FedopsError(f"easy-rsa {' '.join(args[:2])} failed ({self.where}):\n{tail}",
                              "see the message above; `invoke ca.status` shows the PKI's state")
        return proc.stdout


def ssl_conf(runner: Runner) -> dict[str, str]:
    """easy-rsa 3.1 (Debian 12) reads openssl-easyrsa.cnf from the PKI folder, which
    3.2 (the ca-tools image, Debian 13) no longer writes there: a CA made in the container
    and then used by a host's 3.1 gets the installed copy named explicitly."""
    if (Path(runner.pki) / "openssl-easyrsa.cnf").is_file():
        return {}
    installed = Path(os.path.realpath(shutil.which(runner.argv[0]) or runner.argv[0])).parent / "openssl-easyrsa.cnf"
    return {"EASYRSA_SSL_CONF": str(installed)} if installed.is_file() else {}


def find_host_easyrsa() -> str | None:
    for candidate in HOST_EASYRSA:
        found = shutil.which(candidate) or (candidate if os.access(candidate, os.X_OK) else None)
        if found:
            return found
    return None


EASYRSA_MODES = ("auto", "host", "container")


def default_runner(pki_dir: Path | None = None, compose_argv: list[str] | None = None,
                   mode: str | None = None) -> Runner:
    """easy-rsa on the host when installed, else in the ca-tools container. FL_EASYRSA
    (auto, host, container; .env) forces one."""
    pki_dir = pki_dir or paths.PKI_DIR
    mode = (mode or compose.setting("FL_EASYRSA", "auto")).strip().lower()
    if mode not in EASYRSA_MODES:
        raise FedopsError(f"FL_EASYRSA={mode!r} is not one of {', '.join(EASYRSA_MODES)}",
                          "set FL_EASYRSA=auto (the default) in .env.local")
    host = find_host_easyrsa() if mode != "container" else None
    if host:
        return Runner([host], str(pki_dir), "host")
    if mode == "host":
        raise FedopsError("FL_EASYRSA=host but easy-rsa is not installed on this host",
                          "install it (Debian/Ubuntu: apt-get install easy-rsa) or set FL_EASYRSA=auto")
    if compose_argv is None:
        raise FedopsError("easy-rsa is not installed on this host",
                          "install it (Debian/Ubuntu: apt-get install easy-rsa) or let the task use "
                          "the ca-tools container (needs Docker)")
    if pki_dir.resolve() != (paths.instance() / "ca" / "pki").resolve():
        raise FedopsError(f"the ca-tools container can only use the instance's CA ({paths.instance() / 'ca/pki'}), "
                          f"not {pki_dir}", "install easy-rsa on the host to use another folder")
    uid = f"{os.getuid()}:{os.getgid()}"
    return Runner([*compose_argv, "run", "--rm", "--no-deps", "-u", uid], "/ca/pki", "container",
                  ext_dir="/x509-types", service="ca-tools")


class PKI:
    def __init__(self, fed: Federation, pki_dir: Path | None = None, runner: Runner | None = None):
        self.fed = fed
        self.dir = pki_dir or paths.PKI_DIR
        self.runner = runner or default_runner(pki_dir)

    # ----- paths
    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def crl(self) -> Path:
        return self.dir / "crl.pem"

    def cert(self, name: str) -> Path:
        return self.dir / "issued" / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.dir / "private" / f"{name}.key"

    @property
    def revoked_list(self) -> Path:
        """Names revoked on purpose: never silently re-issued by `ensure`."""
        return self.dir / "revoked-names.txt"

    def revoked_names(self) -> set[str]:
        return set(self.revoked_list.read_text().split()) if self.revoked_list.exists() else set()

    def reinstate(self, name: str) -> None:
        names = self.revoked_names() - {name}
        self.revoked_list.write_text("".join(f"{n}\n" for n in sorted(names)))

    def exists(self) -> bool:
        return self.ca_cert.exists() and (self.dir / "private" / "ca.key").exists()

    def require(self) -> None:
        if not self.exists():
            raise FedopsError(f"there is no project CA yet in {self.dir}", "run: invoke ca.init")

    # ----- easy-rsa
    def _env(self, org: str | None = None) -> dict[str, str]:
        ca = self.fed.ca
        return {
            "EASYRSA_BATCH": "1",
            "EASYRSA_ALGO": "ec",               # EC P-384: the OPS manual's curve, >= RSA 3072
            "EASYRSA_CURVE": "secp384r1",
            "EASYRSA_DIGEST": "sha384",
            "EASYRSA_CA_EXPIRE": str(ca.ca_days),
            "EASYRSA_CERT_EXPIRE": str(ca.cert_days),   # easy-rsa's 825-day default is too long
            "EASYRSA_CRL_DAYS": str(ca.crl_days),
            "EASYRSA_DN": "org",
            "EASYRSA_REQ_COUNTRY": ca.country,
            "EASYRSA_REQ_PROVINCE": ca.province,
            "EASYRSA_REQ_CITY": ca.city,
            "EASYRSA_REQ_ORG": org or ca.organisation,
            "EASYRSA_REQ_EMAIL": ca.email,
            "EASYRSA_REQ_OU": ca.unit,
        }

    def easyrsa(self, *args: str, org: str | None = None) -> str:
        return self.runner(list(args), self._env(org))

    def init(self, force: bool = False) -> bool:
        """Create the CA. Returns False (and changes nothing) when one exists and not force."""
        if self.exists() and not force:
            return False
        if self.dir.exists():
            if not force:
                raise FedopsError(f"{self.dir} exists but holds no complete CA (no ca.crt or ca.key)",
                                  "inspect it, then re-run with --force to start a new CA")
            shutil.rmtree(self.dir)
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        self.easyrsa("init-pki")
        self.easyrsa(f"--req-cn={self.fed.ca.common_name}", "build-ca", "nopass")
        self.gen_crl()   # a CRL from the start, so the edge can check revocation at once
        return True

    def gen_crl(self) -> None:
        self.easyrsa("gen-crl")

    def ensure_crl_fresh(self) -> bool:
        """An expired CRL makes the edge refuse every organisation: renew it well before."""
        if self.crl.exists():
            crl = x509.load_pem_x509_crl(self.crl.read_bytes())
            if crl.next_update_utc - now() > RENEW_BEFORE:
                return False
        self.gen_crl()
        return True

    def ensure(self, name: str, sans: list[str], kind: str = "server", org: str | None = None) -> str:
        """Issue `name` unless a valid certificate with exactly these SANs exists.

        Returns "kept", "issued", "reissued" (SANs changed or expiring: the old one is
        revoked as superseded) or "revoked" (revoked on purpose: `invoke ca.reinstate`).
        """
        self.require()
        if name in self.revoked_names():
            return "revoked"
        path = self.cert(name)
        if path.exists():
            cert = load_cert(path)
            fresh = cert.not_valid_after_utc - now() > RENEW_BEFORE
            if fresh and sorted(cert_sans(cert)) == sorted(sans) and not self.is_revoked(cert):
                return "kept"
            self.revoke(name, reason="superseded", crl=False)
            result = "reissued"
        else:
            result = "issued"
            # a request and key without a certificate: an issue that was interrupted
            for leftover in (self.dir / "reqs" / f"{name}.req", self.dir / "private" / f"{name}.key"):
                leftover.unlink(missing_ok=True)
        self.easyrsa(f"--san={','.join(sans)}", f"build-{kind}-full", name, "nopass", org=org)
        if result == "reissued":
            self.gen_crl()
        return result

    def revoke(self, name: str, reason: str = "unspecified", crl: bool = True,
               remember: bool = False) -> None:
        self.require()
        if not self.cert(name).exists():
            raise FedopsError(f"no certificate named {name!r} in the project CA",
                              "`invoke ca.status` lists the certificates")
        self.easyrsa("revoke", name, reason)
        if remember:
            with self.revoked_list.open("a") as fh:
                fh.write(f"{name}\n")
        if crl:
            self.gen_crl()

    # ----- reading
    def is_revoked(self, cert: x509.Certificate) -> bool:
        if not self.crl.exists():
            return False
        crl = x509.load_pem_x509_crl(self.crl.read_bytes())
        return crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None

    def issued(self) -> list[str]:
        folder = self.dir / "issued"
        return sorted(p.stem for p in folder.glob("*.crt")) if folder.exists() else []


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise FedopsError(f"certificate {path} is missing", "run: invoke ca.issue")


def cert_sans(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        return []
    return [f"DNS:{n}" for n in ext.get_values_for_type(x509.DNSName)] + \
           [f"IP:{ip}" for ip in ext.get_values_for_type(x509.IPAddress)]


@dataclass
class CertStatus:
    name: str
    subject: str
    sans: list[str]
    not_after: dt.datetime
    verifies: bool
    revoked: bool
    key: str

    @property
    def days_left(self) -> int:
        return (self.not_after - now()).days

    @property
    def state(self) -> str:
        if self.revoked:
            return "REVOKED"
        if not self.verifies:
            return "NOT SIGNED BY CA"
        if self.days_left < 0:
            return "EXPIRED"
        if self.days_left * dt.timedelta(days=1) < RENEW_BEFORE:
            return "RENEW SOON"
        return "ok"


def describe_key(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    return f"{type(key).__name__.replace('PublicKey', '').strip('_')} {getattr(key, 'key_size', '')}".strip()


def verifies(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
        return True
    except Exception:
        return False


def status(pki: PKI) -> tuple[list[CertStatus], dt.datetime | None]:
    """Every certificate (the CA included) and the CRL's next update."""
    pki.require()
    ca = load_cert(pki.ca_cert)
    rows = [CertStatus("ca", ca.subject.rfc4514_string(), cert_sans(ca), ca.not_valid_after_utc,
                       verifies(ca, ca), False, describe_key(ca))]
    for name in pki.issued():
        cert = load_cert(pki.cert(name))
        rows.append(CertStatus(name, cert.subject.rfc4514_string(), cert_sans(cert),
                               cert.not_valid_after_utc, verifies(cert, ca), pki.is_revoked(cert),
                               describe_key(cert)))
    # Revoked and not re-issued: easy-rsa keeps the certificate under revoked/ (by serial).
    revoked_away = pki.revoked_names() - set(pki.issued())
    latest: dict[str, x509.Certificate] = {}
    for path in sorted((pki.dir / "revoked" / "certs_by_serial").glob("*.crt")):
        cert = load_cert(path)
        name = common_name(cert)
        if name in revoked_away and (name not in latest
                                     or cert.not_valid_before_utc > latest[name].not_valid_before_utc):
            latest[name] = cert
    for name, cert in sorted(latest.items()):
        rows.append(CertStatus(name, cert.subject.rfc4514_string(), cert_sans(cert),
                               cert.not_valid_after_utc, verifies(cert, ca), True, describe_key(cert)))
    next_update = None
    if pki.crl.exists():
        crl = x509.load_pem_x509_crl(pki.crl.read_bytes())
        next_update = crl.next_update_utc
    return rows, next_update


def common_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


# ----- deployment into per-service folders
Chown = Callable[[Path, int], None]


def deploy(pki: PKI, name: str, dest: Path, uid: int, chown: Chown | None = None) -> bool:
    """Copy a certificate, its key, the CA certificate and the CRL into dest.

    The folder is mounted read-only at /etc/fl/tls; the key is readable only by the
    service's user (uid, mode 0400). Files are replaced by rename (a running container
    sees the new ones). Returns True when anything changed.
    """
    changed = False
    pki.require()
    for src in (pki.cert(name), pki.key(name)):
        if not src.exists():
            raise FedopsError(f"{src} is missing", f"run: invoke ca.issue (it issues {name})")
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, 0o755)
    files = {"tls.crt": pki.cert(name), "ca.crt": pki.ca_cert, "crl.pem": pki.crl, "tls.key": pki.key(name)}
    for target, src in files.items():
        out = dest / target
        data = src.read_bytes()
        if out.exists():
            try:
                if out.read_bytes() == data:
                    continue
            except PermissionError:   # a key already given to the service's uid
                pass
            out.unlink()
        tmp = dest / f".{target}.tmp"
        tmp.write_bytes(data)
        os.chmod(tmp, 0o400 if target == "tls.key" else 0o444)
        os.replace(tmp, out)
        changed = True
    (chown or ownership.give)(dest / "tls.key", uid)
    return changed


def deploy_trust(pki: PKI, dest: Path) -> bool:
    """Copy the CA certificate and the CRL (nothing secret) into dest, for a service
    that verifies the project's certificates but has none. Replaced by rename, like
    deploy(); refresh_crl() keeps the CRL current. Returns True when anything changed."""
    pki.require()
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, 0o755)
    changed = False
    for target, src in {"ca.crt": pki.ca_cert, "crl.pem": pki.crl}.items():
        out, data = dest / target, src.read_bytes()
        if out.exists() and out.read_bytes() == data:
            continue
        tmp = dest / f".{target}.tmp"
        tmp.write_bytes(data)
        os.chmod(tmp, 0o444)
        os.replace(tmp, out)
        changed = True
    return changed


def refresh_crl(pki: PKI, deploy_dir: Path | None = None) -> list[Path]:
    """Copy the current CRL into every deployed folder; returns the folders updated."""
    deploy_dir = deploy_dir or paths.DEPLOY_DIR
    data = pki.crl.read_bytes()
    changed = []
    for folder in sorted(p for p in deploy_dir.iterdir() if p.is_dir()) if deploy_dir.exists() else []:
        target = folder / "crl.pem"
        if not target.exists() or target.read_bytes() != data:
            tmp = folder / ".crl.pem.tmp"
            tmp.write_bytes(data)
            os.chmod(tmp, 0o444)
            os.replace(tmp, target)
            changed.append(folder)
    return changed
