"""Where things live: one place, read by every task, overridden by the test suite.

Two roots:
- ROOT, the checkout: what is committed (compose files, services/, federation.yaml,
  .env, ca/x509-types).
- the instance: everything one deployment generates or keeps locally (ca/pki,
  ca/deploy, secrets/, build/, backups/, federation.local.yaml, .env.local). By default
  the checkout itself; the environment variable FL_INSTANCE_DIR moves it elsewhere. The
  test suite runs its own throwaway instance this way, so it never touches the
  operator's files.

The instance paths are looked up at every use (module attributes computed from the
environment), so code reads `paths.PKI_DIR` and always gets the current instance's.
"""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "federation.yaml"       # committed defaults; LOCAL_CONFIG overrides
CA_DIR = ROOT / "ca"                    # committed: certificate profiles, ca-tools image
X509_TYPES = CA_DIR / "x509-types"
SERVICES_DIR = ROOT / "services"
DOCS_DIR = ROOT / "docs"
APPS_DIR = ROOT / "apps"
TEST_ARTIFACTS_DIR = ROOT / "test-artifacts"   # the stack tests' screenshots (git-ignored)

INSTANCE_ENV = "FL_INSTANCE_DIR"

# name -> path below the instance folder
_IN_INSTANCE = {
    "PKI_DIR": "ca/pki",                  # easy-rsa's PKI: the CA key lives here
    "DEPLOY_DIR": "ca/deploy",            # per-service TLS folders mounted read-only
    "SECRETS_DIR": "secrets",             # generated passwords and keys
    "BUILD_DIR": "build",                 # rendered files: federation.json, overlays
    "BACKUPS_DIR": "backups",             # `invoke backup` (holds the CA key: private)
    "LOCAL_CONFIG": "federation.local.yaml",
    "LOCAL_ENV": ".env.local",
}


def instance() -> Path:
    """The current instance folder: $FL_INSTANCE_DIR, else the checkout."""
    value = os.environ.get(INSTANCE_ENV, "").strip()
    return Path(value).resolve() if value else ROOT


def is_default_instance() -> bool:
    return instance() == ROOT


def __getattr__(name: str) -> Path:
    if name in _IN_INSTANCE:
        return instance() / _IN_INSTANCE[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
