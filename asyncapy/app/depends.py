"""Dependencies: ``Depends(provider)``, resolved once at registration into a call plan.

A handler declares what it needs after ``(client, packet)``:

    async def create(client: Client, packet: Packet[Create],
                     tx: Annotated[Tx, Depends(get_tx)],
                     user: User = Depends(logged_in)) -> Order: ...

and a router or a registration adds dependencies whose values nobody takes
(``dependencies=[Depends(check_auth)]``): they run for their effect, before the handler.

At registration the graph (providers, the providers they take, cycles, what each
parameter is) is read into ``Steps``, a flat tuple in call order. Per packet,
``resolve`` walks that tuple: no signature is inspected, nothing is looked up by name.
For the connection's fast path the steps become one generated function
(``routing.callplan``). A provider is a sync or async function, or a sync or async generator (its code after
``yield`` is the teardown, run once the handler finished and its reply was written,
also when something raised: the exception is thrown in at the ``yield``, so
``async with db.transaction(): yield tx`` rolls back).
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Union, get_args, get_origin

from pydantic import BaseModel

from ..wire.errors import UsageError
from ..model.packet import Packet
from ..model.peer import Client

__all__ = [
    "Dependency",
    "Depends",
    "Scope",
    "Steps",
    "build_steps",
    "close_exits",
    "close_exits_sync",
    "dependency_params",
    "resolve",
]


class Dependency:
    """What ``Depends(provider)`` makes: a provider and whether its value is cached per packet."""

    __slots__ = ("provider", "use_cache")

    def __init__(self, provider: Callable[..., Any], use_cache: bool = True) -> None:
        self.provider = provider
        self.use_cache = use_cache

    def __repr__(self) -> str:
        extra = "" if self.use_cache else ", use_cache=False"
        return f"Depends({_name(self.provider)}{extra})"


def Depends(dependency: Callable[..., Any] | Dependency, *, use_cache: bool = True) -> Any:  # noqa: N802 - FastAPI's spelling
    """Declare a dependency: ``Annotated[T, Depends(f)]``, ``x: T = Depends(f)`` or in ``dependencies=[...]``.

    ``dependency`` is called once per packet (``use_cache=False``: once per use) with
    what its parameters ask for: the ``Client``, the ``Packet`` (typed as the handler's),
    the handler's model, or other ``Depends``. Typed ``Any`` so that the default form
    type-checks, as in FastAPI. A ``dependency`` that is not callable is a ``UsageError``
    when the handler is registered, where its name and the parameter's are known.
    """
    if isinstance(dependency, Dependency):  # a dependency object already (a ``SecurityScheme``)
        return dependency
    return Dependency(dependency, use_cache)


# Where a provider's argument comes from (a non-negative int is the index of an earlier step).
CLIENT: Final = -1
PACKET: Final = -2
DATA: Final = -3

# How a provider is called.
SYNC: Final = 0
ASYNC: Final = 1
GEN: Final = 2
ASYNC_GEN: Final = 3


@dataclass(frozen=True, slots=True)
class Step:
    """One provider call: ``provider(**{name: source})`` where a source is CLIENT/PACKET/DATA or a step index.

    ``key`` is the step's entry in the packet's cache (shared by every handler of the
    packet); None when its value is not cached (``use_cache=False``) or depends on the
    handler's typed packet.
    """

    provider: Callable[..., Any]
    kind: int
    args: tuple[tuple[str, int], ...]
    key: Any


@dataclass(frozen=True, slots=True)
class Steps:
    """A handler's dependencies in call order; ``params`` are the handler's keyword arguments."""

    steps: tuple[Step, ...]
    params: tuple[tuple[str, int], ...]
    #: Only sync generators (or none) need a teardown: ``close_exits_sync`` closes them.
    sync_exits: bool = field(init=False)
    #: ``(provider, kind, args, key)`` per step, unpacked in the loop (faster than attributes).
    plan: tuple[tuple[Callable[..., Any], int, tuple[tuple[str, int], ...], Any], ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sync_exits", all(step.kind != ASYNC_GEN for step in self.steps))
        object.__setattr__(self, "plan", tuple((s.provider, s.kind, s.args, s.key) for s in self.steps))


class Scope:
    """One packet's dependency values (``cache``) and pending teardowns (``exits``), across handlers."""

    __slots__ = ("cache", "exits")

    def __init__(self) -> None:
        self.cache: dict[Any, Any] = {}  # Step.key -> value: one value per provider per packet
        self.exits: list[Any] = []

    async def close(self, error: BaseException | None) -> None:
        """Run the teardowns, last opened first; ``error`` is thrown in at their ``yield``."""
        exits, self.exits = self.exits, []
        await close_exits(exits, error)


_NOTHING: Final = object()


def close_exits_sync(exits: list[Any], error: BaseException | None = None) -> None:
    """Close sync generators, last opened first (``error`` thrown in); a teardown's own failure is raised."""
    failure: BaseException | None = None
    for gen in reversed(exits):
        try:
            if error is None:
                if next(gen, _NOTHING) is not _NOTHING:  # resumed once: the teardown ran
                    gen.close()
                    raise RuntimeError(f"the dependency {_name(gen)} yielded more than once")
            else:
                gen.throw(error)
                gen.close()
                raise RuntimeError(f"the dependency {_name(gen)} yielded more than once")
        except StopIteration:
            pass
        except BaseException as exc:  # noqa: BLE001 - like ExitStack: the last failure wins
            if exc is not error:
                failure = exc
    if failure is not None:
        raise failure


async def close_exits(exits: list[Any], error: BaseException | None = None) -> None:
    """Close sync and async generators, last opened first; as ``close_exits_sync``."""
    failure: BaseException | None = None
    for gen in reversed(exits):
        try:
            if not inspect.isasyncgen(gen):
                close_exits_sync([gen], error)
                continue
            try:
                if error is None:
                    await gen.__anext__()
                else:
                    await gen.athrow(error)
            except StopAsyncIteration:
                continue
            await gen.aclose()
            raise RuntimeError(f"the dependency {_name(gen)} yielded more than once")
        except BaseException as exc:  # noqa: BLE001
            if exc is not error:
                failure = exc
    if failure is not None:
        raise failure


async def resolve(
    steps: Steps, client: Client, packet: Packet[Any], exits: list[Any], cache: dict[Any, Any] | None
) -> dict[str, Any]:
    """Call every step in order (generators entered, added to ``exits``); the handler's keyword arguments."""
    values: list[Any] = []
    for provider, kind, args, key in steps.plan:
        if cache is not None and key is not None and key in cache:
            values.append(cache[key])
            continue
        kwargs = {}
        for name, source in args:
            if source >= 0:
                kwargs[name] = values[source]
            elif source == CLIENT:
                kwargs[name] = client
            elif source == PACKET:
                kwargs[name] = packet
            else:
                kwargs[name] = packet.data
        value = provider(**kwargs)
        if kind == ASYNC:
            value = await value
        elif kind == GEN:
            gen = value
            value = next(gen)
            exits.append(gen)
        elif kind == ASYNC_GEN:
            gen = value
            value = await gen.__anext__()
            exits.append(gen)
        values.append(value)
        if cache is not None and key is not None:
            cache[key] = value
    return {name: values[index] for name, index in steps.params}


# -- registration: reading the graph ------------------------------------------------------


def dependency_params(handler: Callable[..., Any], hints: dict[str, Any], skip: int) -> dict[str, Dependency]:
    """The handler's parameters after the first ``skip`` positional ones that are ``Depends``.

    A parameter that is neither a dependency nor has a default is a ``UsageError``.
    """
    name = _name(handler)
    out: dict[str, Dependency] = {}
    for index, param in enumerate(_signature(handler, name).parameters.values()):
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if index < skip and param.kind is not param.KEYWORD_ONLY:
            continue
        dep = _declared(param, hints.get(param.name))
        if dep is not None:
            out[param.name] = dep
        elif param.default is param.empty:
            raise UsageError(
                f"handler {name!r}: parameter {param.name!r} is not a dependency; a handler takes exactly two "
                f"positional arguments (client, packet), then only dependencies: "
                f"`{param.name}: Annotated[T, Depends(provider)]`"
            )
    return out


def build_steps(
    handler_name: str,
    params: dict[str, Dependency],
    extra: Sequence[Any],
    models: tuple[type[BaseModel], ...],
) -> Steps | None:
    """The call plan of a handler's dependencies (``extra``: ``dependencies=[...]``); None if it has none."""
    if not params and not extra:
        return None
    builder = _Builder(handler_name, models)
    for dep in extra:
        builder.add(as_dependency(dep, f"handler {handler_name!r}"), "dependencies=[...]", ())
    handler_params = tuple((name, builder.add(dep, name, ())) for name, dep in params.items())
    return Steps(tuple(builder.steps), handler_params)


def as_dependency(dep: Any, where: str) -> Dependency:
    """``Depends(f)`` as it is, or a bare callable as ``Depends(callable)``; ``where`` names the list in errors."""
    if isinstance(dep, Dependency):
        if not callable(dep.provider):
            raise UsageError(
                f"{where}: dependencies=[...]: Depends() takes a callable (a function, a generator function, "
                f"a class), not {dep.provider!r}"
            )
        return dep
    if callable(dep):
        return Dependency(dep)
    raise UsageError(f"{where}: {dep!r} in dependencies=[...] is not a dependency; write Depends(provider)")


class _Builder:
    def __init__(self, handler_name: str, models: tuple[type[BaseModel], ...]) -> None:
        self.handler_name = handler_name
        self.models = models
        self.steps: list[Step] = []
        self.cached: dict[Any, int] = {}

    def add(self, dep: Dependency, param: str, path: tuple[Any, ...]) -> int:
        provider = dep.provider
        if not callable(provider):
            raise UsageError(
                f"handler {self.handler_name!r}: parameter {param!r}: Depends() takes a callable "
                f"(a function, a generator function, a class), not {provider!r}"
            )
        if provider in path:
            chain = " -> ".join(_name(p) for p in (*path, provider))
            raise UsageError(f"handler {self.handler_name!r}: parameter {param!r}: dependency cycle {chain}")
        if dep.use_cache:
            known = self.cached.get(_key(provider))
            if known is not None:
                return known
        args = tuple(
            (name, self._source(provider, name, arg, (*path, provider), param)) for name, arg in self._args(provider, param)
        )
        shared = dep.use_cache and all(
            src in (CLIENT, PACKET) and not typed or src >= 0 and self.steps[src].key is not None
            for (_, src), typed in zip(args, self._typed(provider, param))
        )
        self.steps.append(Step(provider, _kind(provider), args, _key(provider) if shared else None))
        index = len(self.steps) - 1
        if dep.use_cache:
            self.cached[_key(provider)] = index
        return index

    def _args(self, provider: Callable[..., Any], param: str) -> list[tuple[str, Any]]:
        """(name, what it is) for each parameter ``provider`` needs a value for."""
        pname = _name(provider)
        sig = _signature(provider, self.handler_name, param)
        hints = _hints(provider, self.handler_name, param)
        out: list[tuple[str, Any]] = []
        for p in sig.parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if p.kind is p.POSITIONAL_ONLY:
                raise UsageError(
                    f"handler {self.handler_name!r}: parameter {param!r}: dependency {pname} has a "
                    f"positional-only parameter {p.name!r}; dependencies are called with keywords"
                )
            annotation = hints.get(p.name, p.annotation)
            dep = _declared(p, annotation)
            if dep is not None:
                out.append((p.name, dep))
            elif _is_client(annotation) or (annotation is p.empty and p.name == "client"):
                out.append((p.name, CLIENT))
            elif _packet_kind(annotation) is not None or (annotation is p.empty and p.name == "packet"):
                out.append((p.name, annotation))
            elif p.default is not p.empty:
                continue
            else:
                raise UsageError(
                    f"handler {self.handler_name!r}: parameter {param!r}: dependency {pname} has a parameter "
                    f"{p.name!r} nothing can provide; annotate it Client, Packet, Packet[Model], the "
                    "handler's Model, or Annotated[T, Depends(provider)] (or give it a default)"
                )
        return out

    def _typed(self, provider: Callable[..., Any], param: str) -> list[bool]:
        """For each argument of ``provider``: does it take the handler's typed packet or model?"""
        return [
            not isinstance(arg, Dependency) and arg is not CLIENT and (_packet_kind(arg) or ("untyped",))[0] != "untyped"
            for _, arg in self._args(provider, param)
        ]

    def _source(self, provider: Callable[..., Any], name: str, arg: Any, path: tuple[Any, ...], param: str) -> int:
        """Where ``provider``'s argument ``name`` comes from; ``param`` is the handler's parameter being resolved."""
        if isinstance(arg, Dependency):
            return self.add(arg, param, path)
        if arg is CLIENT:
            return CLIENT
        kind = _packet_kind(arg)
        if kind is None or kind[0] == "untyped":
            return PACKET
        wanted = kind[1]
        if not self.models or not set(self.models) <= set(wanted):
            has = ", ".join(m.__name__ for m in self.models) or "untyped packets"
            raise UsageError(
                f"handler {self.handler_name!r}: parameter {param!r}: dependency {_name(provider)} takes {name!r} as "
                f"{_show(arg)}, but the handler accepts {has}; annotate it Packet to take any packet"
            )
        return PACKET if kind[0] == "packet" else DATA


def _declared(param: inspect.Parameter, annotation: Any) -> Dependency | None:
    """The ``Depends`` of a parameter: in its ``Annotated`` metadata or as its default."""
    if isinstance(param.default, Dependency):
        return param.default
    if get_origin(annotation) is typing.Annotated:
        for meta in reversed(get_args(annotation)[1:]):
            if isinstance(meta, Dependency):
                return meta
    return None


def _is_client(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Client)


def _packet_kind(annotation: Any) -> tuple[str, tuple[type[BaseModel], ...]] | None:
    """("untyped", ()), ("packet", models) for Packet[...], ("model", models) for a model; else None."""
    if annotation is Packet:
        return ("untyped", ())
    if get_origin(annotation) is Packet:
        models = _models(get_args(annotation)[0])
        return ("packet", models) if models else ("untyped", ())
    models = _models(annotation)
    return ("model", models) if models else None


def _models(annotation: Any) -> tuple[type[BaseModel], ...]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return (annotation,)
    if get_origin(annotation) in (Union, types.UnionType):
        found = tuple(m for arg in get_args(annotation) for m in _models(arg))
        return found if len(found) == len(get_args(annotation)) else ()
    return ()


def _kind(provider: Callable[..., Any]) -> int:
    target = provider if inspect.isfunction(provider) or inspect.ismethod(provider) else getattr(provider, "__call__", provider)
    if isinstance(provider, type):
        return SYNC
    if inspect.isasyncgenfunction(target):
        return ASYNC_GEN
    if inspect.isgeneratorfunction(target):
        return GEN
    if inspect.iscoroutinefunction(target):
        return ASYNC
    return SYNC


def _key(provider: Any) -> Any:
    try:
        hash(provider)
    except TypeError:
        return id(provider)
    return provider


def _signature(fn: Callable[..., Any], handler_name: str, param: str | None = None) -> inspect.Signature:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        where = f"handler {handler_name!r}" + (f": parameter {param!r}" if param else "")
        raise UsageError(f"{where}: cannot read the signature of {_name(fn)}") from None


def _hints(fn: Callable[..., Any], handler_name: str, param: str) -> dict[str, Any]:
    target: Any = fn
    if isinstance(fn, type):
        target = fn.__init__  # type: ignore[misc]
    elif not (inspect.isfunction(fn) or inspect.ismethod(fn)):
        target = getattr(fn, "__call__", fn)
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception as exc:  # NameError for a forward reference
        raise UsageError(
            f"handler {handler_name!r}: parameter {param!r}: cannot resolve the annotations of "
            f"dependency {_name(fn)} ({exc}); import what they name at module level"
        ) from None


def _name(obj: Any) -> str:
    name = getattr(obj, "__qualname__", None) or getattr(type(obj), "__qualname__", None)
    return str(name) if name else repr(obj)


def _show(annotation: Any) -> str:
    return annotation.__name__ if isinstance(annotation, type) else repr(annotation)
