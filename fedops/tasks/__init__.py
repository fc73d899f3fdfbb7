"""Invoke task modules: thin wrappers over fedops' functions."""
from __future__ import annotations

import functools

from invoke import Exit

from ..errors import FedopsError


def clear_errors(func):
    """Turn a FedopsError into a short message and exit code 2, without a traceback."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except FedopsError as exc:
            raise Exit(f"error: {exc}", code=2)
    return wrapper
