"""The README's promise that easy-rsa on the host is optional: the CA tasks run easy-rsa
in the ca-tools container (FL_EASYRSA=container, as `auto` does where easy-rsa is not
installed), against a scratch instance of their own."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

import testinstance
from fedops import compose, paths


@pytest.fixture
def scratch(stack):
    """A second instance (its own project, subnets and ports: the engine already holds the
    test deployment's networks) whose CA tasks must use the container."""
    folder = testinstance.create(compose.settings(), "ca-", FL_EASYRSA="container")
    yield folder
    invoke(folder, "down", "--volumes", "--yes")      # the networks `compose run` made
    testinstance.destroy(folder)


def invoke(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, paths.INSTANCE_ENV: str(folder)}
    proc = subprocess.run([str(paths.ROOT / "invoke"), *args], capture_output=True, text=True, env=env,
                          cwd=paths.ROOT, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_the_ca_tasks_work_through_the_ca_tools_container(scratch, stack):
    invoke(scratch, "images.build", "--service", "ca-tools", "--profile", "tools")
    init = invoke(scratch, "ca.init").stdout
    assert "easy-rsa in the ca-tools container" in init and "created the CA" in init
    pki = scratch / "ca" / "pki"
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    assert (pki / "private" / "ca.key").stat().st_uid == os.getuid()   # the caller's files, not root's
    issued = invoke(scratch, "ca.issue").stdout
    assert "nginx" in issued and "org-alpha" in issued and "issued" in issued
    for name in ("nginx", "org-alpha"):
        cert = x509.load_pem_x509_certificate((pki / "issued" / f"{name}.crt").read_bytes())
        cert.verify_directly_issued_by(ca)
    assert "kept" in invoke(scratch, "ca.init").stdout
    assert set(invoke(scratch, "ca.issue").stdout.split()) >= {"kept"}
    invoke(scratch, "ca.revoke", "alpha")
    crl = x509.load_pem_x509_crl((pki / "crl.pem").read_bytes())
    alpha = x509.load_pem_x509_certificate((pki / "revoked" / "certs_by_serial").glob("*.crt").__next__().read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(alpha.serial_number) is not None
    status = invoke(scratch, "ca.status").stdout
    assert "org-alpha" in status and "REVOKED" in status
    # nothing of it in the checkout or the test deployment
    assert not (paths.ROOT / "ca" / "pki").is_relative_to(scratch)
    assert stack.instance != scratch
