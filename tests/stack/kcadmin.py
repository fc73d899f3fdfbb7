"""Keycloak's admin REST API on the 127.0.0.1-only admin port, as the bootstrap admin
(fedops/kcadmin.py, on the test deployment's port and secrets)."""
import httpx

from fedops import kcadmin
from fedops.kcadmin import create_user, delete_user, user

__all__ = ["admin_client", "add_to_group", "create_user", "delete_user", "user"]


def admin_client(stack) -> httpx.Client:
    return kcadmin.admin_client(stack.ca)


def add_to_group(stack, username: str, group_name: str) -> str:
    """Make a realm user a member of a group (idempotent); returns the username."""
    with admin_client(stack) as admin:
        kcadmin.add_to_group(admin, username, group_name)
    return username
