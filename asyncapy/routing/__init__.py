"""Routing: registration (router), the compile step and dispatch, kept apart."""

from .dispatch import Miss, Plan, compile_routes
from .router import Route, Router

__all__ = ["Miss", "Plan", "Route", "Router", "compile_routes"]
