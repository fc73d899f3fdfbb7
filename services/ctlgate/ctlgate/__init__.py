"""ctlgate: single-sign-on gateway for the Flower SuperLink Control API.

NGINX asks ``GET /auth`` before forwarding ``/v1/control/*`` to the SuperLink and
routes the three login endpoints the flwr CLI calls before it holds a token
(``get-login-details``, ``get-auth-tokens``, ``refresh-auth-tokens``) straight here.
"""

__all__ = ["__version__"]
__version__ = "1.0.0"
