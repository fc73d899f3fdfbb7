"""``python -m ctlgate``: run the gateway (configuration from the environment)."""

from .server import main

main()
