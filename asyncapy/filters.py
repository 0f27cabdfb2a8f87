"""``asyncapy.filters``: the filters, at the path the README documents (the code is ``asyncapy.app.filters``)."""

from .app.filters import (
    And,
    ApiKey,
    as_filter,
    Custom,
    Fields,
    Filter,
    Filters,
    Ip,
    is_filter,
    Not,
    Or,
    RateLimit,
)

__all__ = [
    "And",
    "ApiKey",
    "as_filter",
    "Custom",
    "Fields",
    "Filter",
    "Filters",
    "Ip",
    "is_filter",
    "Not",
    "Or",
    "RateLimit",
]
