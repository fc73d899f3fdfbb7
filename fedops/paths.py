"""Where things live in a checkout. Everything generated is below git-ignored folders."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "federation.yaml"
LOCAL_CONFIG = ROOT / "federation.local.yaml"
CA_DIR = ROOT / "ca"
PKI_DIR = CA_DIR / "pki"            # easy-rsa's PKI: the CA key lives here (git-ignored)
DEPLOY_DIR = CA_DIR / "deploy"      # per-service TLS folders mounted read-only
SECRETS_DIR = ROOT / "secrets"      # generated passwords and keys (git-ignored)
BUILD_DIR = ROOT / "build"          # rendered files: federation.json, compose overlays
SERVICES_DIR = ROOT / "services"
