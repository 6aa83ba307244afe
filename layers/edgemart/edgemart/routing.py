"""What the route table (edgemart.routetable) gives the running code: each function's Starlette
routes, each handler behind its route's token and input checks (edgemart.requestinputs), the
methods a path allows (the 405 `Allow` header, across every function), and path templates
compiled to patterns indexed by first segment."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from edgemart.routetable import ROUTES, RouteSpec

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import BaseRoute

    from edgemart.requestinputs import Handler

WILDCARD_SEGMENT = "*"
_PARAMETER = re.compile(r"\{(\w+)\}")


class RouteTableError(ValueError):
    """A function's handlers and the route table disagree."""


def template_pattern(path: str) -> re.Pattern[str]:
    """`/products/{product_id}` -> a full-match pattern; a parameter is one non-empty segment,
    as Starlette's default convertor matches it."""
    parts = _PARAMETER.split(path)
    literal = parts[0::2]
    return re.compile("[^/]+".join(re.escape(part) for part in literal))


def first_segment(path: str) -> str:
    """The first segment of a request path, or of a template (WILDCARD_SEGMENT when it is a
    parameter)."""
    segment = path[1:].split("/", 1)[0]
    return WILDCARD_SEGMENT if _PARAMETER.search(segment) else segment


def methods_of(method: str) -> frozenset[str]:
    """The request methods a table method answers: GET also answers HEAD."""
    return frozenset({method, "HEAD"}) if method == "GET" else frozenset({method})


def index_by_segment(
    routes: Iterable[RouteSpec],
) -> dict[str, list[tuple[re.Pattern[str], RouteSpec]]]:
    index: dict[str, list[tuple[re.Pattern[str], RouteSpec]]] = {}
    for route in routes:
        index.setdefault(first_segment(route.path), []).append(
            (template_pattern(route.path), route)
        )
    return index


def matching(
    index: Mapping[str, list[tuple[re.Pattern[str], RouteSpec]]], path: str
) -> Iterable[RouteSpec]:
    """The table's routes whose template matches `path`, whatever their method."""
    for key in (first_segment(path), WILDCARD_SEGMENT):
        for pattern, route in index.get(key, ()):
            if pattern.fullmatch(path):
                yield route


@functools.cache
def table_index() -> dict[str, list[tuple[re.Pattern[str], RouteSpec]]]:
    """The whole route table indexed by first segment, built on first use, not at import."""
    return index_by_segment(ROUTES)


def allowed_methods(path: str) -> list[str]:
    """Every method some function serves on `path` (HEAD with GET), sorted; empty for a path
    no route has."""
    methods: set[str] = set()
    for route in matching(table_index(), path):
        methods |= methods_of(route.method)
    return sorted(methods)


def by_name(*handlers: Handler) -> dict[str, Handler]:
    """Handlers keyed by their Python name, which is the name the route table gives them."""
    return {handler.__name__: handler for handler in handlers}


def starlette_routes(function: str, handlers: Mapping[str, Handler]) -> list[BaseRoute]:
    """`function`'s routes, in table order, each served by the handler the table names once
    the caller and the request's inputs passed the route's checks (`guarded`: the handler
    reads them with `inputs_of`). Refuses a missing handler and one the table does not list
    for this function; a schema the checks cannot enforce fails here too, at import."""
    from starlette.routing import Route, WebSocketRoute

    from edgemart.requestinputs import guarded

    specs = [route for route in ROUTES if route.function == function]
    named = {route.handler for route in specs}
    missing = sorted(named - handlers.keys())
    extra = sorted(handlers.keys() - named)
    if not specs or missing or extra:
        raise RouteTableError(
            f"{function}: handlers missing {missing or 'none'}, not in the route table "
            f"{extra or 'none'}"
        )
    routes: list[BaseRoute] = []
    for spec in specs:
        if spec.websocket:
            # The handler takes the socket and checks its own messages (edgemart.live); a
            # plain request for the same path is told to upgrade.
            routes.append(WebSocketRoute(spec.path, handlers[spec.handler]))
            routes.append(Route(spec.path, upgrade_required, methods=[spec.method]))
        else:
            routes.append(
                Route(spec.path, guarded(spec, handlers[spec.handler]), methods=[spec.method])
            )
    return routes


async def upgrade_required(request: Request) -> Response:
    """A WebSocket route asked for without the upgrade: 426."""
    from edgemart.errors import ProblemError

    raise ProblemError(
        426,
        "upgrade_required",
        "Upgrade Required",
        "This is a WebSocket: send `Connection: Upgrade` and `Upgrade: websocket`",
        headers={"Upgrade": "websocket", "Connection": "Upgrade"},
    )
