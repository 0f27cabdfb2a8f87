"""Routing: registration (router), introspection, the compile step, dispatch, explain."""

from .compiled import CompiledGroup, CompiledRoute
from .compiler import compile_routes
from .dispatch import Miss, Plan
from .explain import Explanation, RouteOutcome
from .introspect import HandlerSpec
from .router import Route, Router

__all__ = [
    "CompiledGroup",
    "CompiledRoute",
    "Explanation",
    "HandlerSpec",
    "Miss",
    "Plan",
    "Route",
    "RouteOutcome",
    "Router",
    "compile_routes",
]
