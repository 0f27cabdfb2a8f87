"""AsyncAPY's name for the blocking client: ``from asyncapy import defaultclient``."""

from .client import AsyncClient, Client

__all__ = ["AsyncClient", "Client"]
