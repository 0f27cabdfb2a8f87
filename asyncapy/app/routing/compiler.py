"""The compile step: routes -> an immutable ``Plan``, done once before serving.

Everything that would cost per packet is done here: one ``TypeAdapter`` per accepted
type, filters sorted into cheap (before validation) and custom (after), a
discriminator index per group, and warnings about handlers that can never run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from types import MappingProxyType, UnionType
from typing import Any, Union, cast, get_args, get_origin

from pydantic import TypeAdapter

from ..depends import Steps, build_steps
from ...wire.errors import ERR_UNAUTHORIZED
from ...model.replies import exact_model, reply_checker
from .compiled import CompiledGroup, CompiledRoute, Tag
from .discriminator import find_discriminator
from .dispatch import Plan
from .invoke import Call, invocation
from .router import Route
from .streaming import stream_invocation

logger = logging.getLogger("asyncapy")


def compile_routes(routes: Sequence[Route]) -> Plan:
    """Compile ``routes`` (registration order) into a plan: groups ascending."""
    adapters: dict[Any, TypeAdapter[Any]] = {}
    by_group: dict[int, list[tuple[int, Route]]] = {}
    for order, route in enumerate(routes):
        by_group.setdefault(route.group, []).append((order, route))
    groups = tuple(_compile_group(g, by_group[g], adapters) for g in sorted(by_group))
    for group in groups:
        warn_dead_routes(group.routes)
    return Plan(groups)


def _compile_group(group: int, entries: list[tuple[int, Route]], adapters: dict[Any, TypeAdapter[Any]]) -> CompiledGroup:
    typed = [route.spec.models for _, route in entries if route.spec.models]
    found = find_discriminator(typed)
    tag_sets = iter(found[1]) if found else iter(())
    compiled = []
    for order, route in entries:
        tags = next(tag_sets) if found and route.spec.models else None
        compiled.append(_compile_route(order, route, tags, adapters))
    routes = tuple(compiled)
    if found is None:
        return CompiledGroup(group, routes, None, MappingProxyType({}), routes)
    index, untagged = _build_index(routes)
    return CompiledGroup(group, routes, found[0], index, untagged)


def _compile_route(
    order: int, route: Route, tags: frozenset[Tag] | None, adapters: dict[Any, TypeAdapter[Any]]
) -> CompiledRoute:
    spec = route.spec
    adapter = None
    if spec.accepts is not None:
        adapter = _adapter(spec.accepts, adapters)
    steps = build_steps(route.name, dict(spec.dependencies), route.dependencies, spec.models)
    check = reply_checker(route.name, spec.returns, "yielded" if spec.stream else "returned")
    if spec.stream:
        assert check is not None  # introspection refused an item type that cannot be checked
        how = stream_invocation(route.name, route.handler, spec.style == "model", steps, check, exact_model(spec.returns))
    else:
        how = invocation(route.name, cast(Call, route.handler), spec.style == "model", steps, check, exact_model(spec.returns))
    security = _security(steps)
    errors = route.errors + ((ERR_UNAUTHORIZED,) if security and ERR_UNAUTHORIZED not in route.errors else ())
    return CompiledRoute(
        name=route.name,
        group=route.group,
        handler=route.handler,
        filters=route.filters,
        models=spec.models,
        accepts=spec.accepts,
        reply_type=spec.reply_type,
        style=spec.style,
        order=order,
        adapter=adapter,
        validate=adapter.validator.validate_python if adapter is not None else None,
        pre=tuple(f for f in route.filters if f.cheap),
        post=tuple(f for f in route.filters if not f.cheap),
        tags=tags,
        call=how.call,
        call_data=how.call_data,
        run=how.run,
        errors=errors,
        security=security,
        stream=spec.stream,
    )


def _security(steps: Steps | None) -> tuple[Any, ...]:
    """The ``asyncapy.security`` schemes among a route's dependencies (nested ones too), each once.

    A scheme's provider is its own bound method; schemes are told by their marker, so that
    routing does not import the security layer above it.
    """
    if steps is None:
        return ()
    found = (getattr(step.provider, "__self__", None) for step in steps.steps)
    return tuple(dict.fromkeys(owner for owner in found if getattr(owner, "asyncapy_security_scheme", False) is True))


def _adapter(accepts: Any, adapters: dict[Any, TypeAdapter[Any]]) -> TypeAdapter[Any]:
    """One adapter per accepted type, shared by every handler that accepts it."""
    try:
        adapter = adapters.get(accepts)
    except TypeError:  # an unhashable annotation (Annotated metadata): not shared
        return TypeAdapter(accepts)
    if adapter is None:
        adapter = adapters[accepts] = TypeAdapter(accepts)
    return adapter


def _build_index(
    routes: tuple[CompiledRoute, ...],
) -> tuple[MappingProxyType[Tag, tuple[CompiledRoute, ...]], tuple[CompiledRoute, ...]]:
    """Tag -> candidates in registration order, untagged routes merged in where they stand."""
    index: dict[Tag, list[CompiledRoute]] = {}
    untagged: list[CompiledRoute] = []
    for route in routes:
        if route.tags is None:
            untagged.append(route)
            for candidates in index.values():
                candidates.append(route)
            continue
        for tag in route.tags:
            index.setdefault(tag, list(untagged)).append(route)
    frozen = {tag: tuple(candidates) for tag, candidates in index.items()}
    return MappingProxyType(frozen), tuple(untagged)


def warn_dead_routes(routes: Sequence[CompiledRoute]) -> None:
    """Log each handler that an earlier, filterless handler of its group always pre-empts."""
    for i, later in enumerate(routes):
        for earlier in routes[:i]:
            if _shadows(earlier, later):
                logger.warning(
                    "handler %s (group %d) can never run: %s, registered before it in the same group "
                    "with no filters, accepts every packet it accepts",
                    later.name,
                    later.group,
                    earlier.name,
                )
                break


def _shadows(earlier: CompiledRoute, later: CompiledRoute) -> bool:
    if earlier.filters:
        return False
    if earlier.accepts is None:
        return True
    plain = all(isinstance(member, type) for member in _members(earlier.accepts))
    return plain and bool(later.models) and set(later.models) <= set(earlier.models)


def _members(accepts: Any) -> tuple[Any, ...]:
    """A union's members, or the type itself (``Annotated`` is kept whole on purpose)."""
    return get_args(accepts) if get_origin(accepts) in (Union, UnionType) else (accepts,)
