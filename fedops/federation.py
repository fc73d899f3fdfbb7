"""Flower federation operations: SuperNode key registration, runs, status."""
from __future__ import annotations


def register_all(c, fed) -> None:
    """Register every organisation's SuperNode key with the SuperLink (idempotent)."""
    return None
