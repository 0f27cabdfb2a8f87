"""``asyncapy.security``: authentication schemes, at the path DESIGN §10 names (the code is ``asyncapy.app.security``)."""

from .app.security import ApiKeyAuth, SecurityScheme, Unauthorized

__all__ = ["ApiKeyAuth", "SecurityScheme", "Unauthorized"]
