"""Request inputs, held to the route table before a handler runs.

A route's parameters and JSON body are JSON Schema fragments in its table entry
(edgemart.routetable). `RouteInputs` compiles them into checks once per route, when the
function's Starlette routes are built (edgemart.routing: `starlette_routes` wraps every handler
with `guarded`), so a schema this module cannot enforce fails the function's import, never a
request. For each request, `guarded` authenticates the caller as the route's `auth` says,
reads its inputs and hands the handler their typed values (`inputs_of(request)`); whatever is
refused is a problem before the handler's first line. What JSON Schema cannot say (one field
against another, the marketplace's currency, rows that must exist) stays in the handlers,
which refuse it with the same `ValidationError`.

In order, and what each refusal is:
1. the token: 401, and 403 on an admin or platform route;
2. path parameters: text no one can store is 422; a value its schema refuses is 404 with the
   parameter's `not_found` code where it has one (no store can have that slug), else 422; a
   UUID in another spelling (upper case, braces, no hyphens, `urn:uuid:`) is 404 `not_found`,
   so each resource has one URL and one cache entry;
3. header parameters: missing or empty is 400 `<name>_required`, refused 400 `invalid_<name>`;
4. the body: 415 unless sent as JSON, 400 `invalid_json` unless it is JSON
   (edgemart.validation), 422 unless it is an object;
5. query parameters and body fields, together: one 422 `validation_error` naming every bad one,
   whether unknown (unless the route ignores its query string), repeated, missing or refused.

The JSON Schema compiled, and nothing else (`SchemaError` names any other keyword): `type`
string, integer, boolean and array (in a body only: `items`, one schema of these kinds but
array, `minItems`, `maxItems`) and, for the body, object with `properties`, `required`,
`additionalProperties: false` and `minProperties`; `minLength`, `maxLength`,
`pattern` (searched as JSON Schema does, with Python's `re`), `enum`, `format: uuid`,
`minimum`, `maximum`, `default`, and the annotations `description` and `examples` (every
example and default must pass its own schema). Strings pass the text rule (`text_problem`)
first; `x-multiline: true` lets them keep tab, line feed and carriage return. Types are strict:
in a body `"100"`, `1.5` and `true` are not integers and `"yes"` is not a boolean; a query or
path integer is decimal digits.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TypeVar

from edgemart.auth import (
    ADMIN_ROLE,
    Principal,
    authenticate,
    authenticate_platform_admin,
    require_role,
)
from edgemart.errors import ProblemError, problem_for_status
from edgemart.routetable import Auth, Param, RouteSpec, Schema, header_problem_codes
from edgemart.validation import ValidationError, field_error, request_json, text_problem

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

T = TypeVar("T")
Handler = Callable[["Request"], Awaitable["Response"]]
Check = Callable[[Any], Any]
Errors = list[dict[str, str]]

INPUTS_STATE_KEY: Final = "inputs"
_NO_DEFAULT: Final = object()
_DIGITS = re.compile(r"-?[0-9]{1,19}")
_HYPHENATED_UUID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_ANNOTATIONS = frozenset({"description", "examples", "default"})
_VALUE_KEYWORDS: Mapping[str, frozenset[str]] = {
    "string": frozenset(
        {"type", "minLength", "maxLength", "pattern", "enum", "format", "x-multiline"}
    ),
    "integer": frozenset({"type", "minimum", "maximum"}),
    "boolean": frozenset({"type"}),
    "array": frozenset({"type", "items", "minItems", "maxItems"}),
}
_BODY_KEYWORDS = frozenset(
    {"type", "properties", "required", "additionalProperties", "minProperties", "description"}
)
_TEMPLATE_PARAMETER = re.compile(r"\{(\w+)\}")


class SchemaError(ValueError):
    """The route table says something about an input that this module does not enforce."""


class _Refused(Exception):
    """A value its schema refuses; the message is the one `errors` carries."""

    @property
    def message(self) -> str:
        return str(self.args[0])


class _Unstorable(_Refused):
    """Text the text rule refuses."""


class _OtherSpelling(_Refused):
    """A path UUID that is not written in its canonical form."""


# Checks: each takes a value as sent (JSON in a body, text elsewhere) and returns it typed.


def _string_check(schema: Schema, location: str, where: str) -> Check:
    multiline = schema.get("x-multiline", False)
    low = schema.get("minLength", 0)
    high = schema.get("maxLength")
    options = schema.get("enum")
    form = schema.get("format")
    if not isinstance(multiline, bool) or not _are_counts(low, high):
        raise SchemaError(f"{where}: x-multiline, minLength or maxLength of the wrong type")
    if options is not None and not all(isinstance(option, str) for option in options):
        raise SchemaError(f"{where}: a string's enum lists strings")
    if form not in (None, "uuid"):
        raise SchemaError(f"{where}: format {form!r} is not compiled (only uuid)")
    pattern = re.compile(schema["pattern"]) if "pattern" in schema else None
    if pattern is not None and multiline:
        # Python's `$` also matches before a final line feed, JSON Schema's does not; the text
        # rule keeps line feeds out of single-line text, which patterns are therefore safe on.
        raise SchemaError(f"{where}: a pattern on multi-line text")
    length = (
        f"must be {low} to {high} characters"
        if high is not None
        else f"must be at least {low} characters"
    )
    kind = "must be a UUID" if form == "uuid" else "must be a string"
    canonical = location == "path"

    def check(value: Any) -> Any:
        if not isinstance(value, str):
            raise _Refused(kind)
        problem = text_problem(value, multiline=multiline)
        if problem is not None:
            raise _Unstorable(problem)
        if len(value) < low or (high is not None and len(value) > high):
            raise _Refused(length)
        if pattern is not None and pattern.search(value) is None:
            raise _Refused(f"must match {pattern.pattern}")
        if options is not None and value not in options:
            raise _Refused(f"must be one of {', '.join(options)}")
        if form == "uuid":
            return _path_uuid(value) if canonical else _hyphenated_uuid(value)
        return value

    return check


def _are_counts(*values: object) -> bool:
    return all(value is None or (type(value) is int and value >= 0) for value in values)


def _hyphenated_uuid(value: str) -> uuid.UUID:
    """A UUID in its hyphenated 36-character form, either case."""
    if not _HYPHENATED_UUID.fullmatch(value):
        raise _Refused("must be a UUID")
    return uuid.UUID(value)


def _path_uuid(value: str) -> uuid.UUID:
    """Any spelling Python reads is a UUID (422 otherwise), but only the canonical one names
    the resource (404 otherwise)."""
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        raise _Refused("must be a UUID") from None
    if str(parsed) != value:
        raise _OtherSpelling("is not the UUID's canonical spelling")
    return parsed


def _integer_check(schema: Schema, location: str, where: str) -> Check:
    low = schema.get("minimum")
    high = schema.get("maximum")
    if any(bound is not None and type(bound) is not int for bound in (low, high)):
        raise SchemaError(f"{where}: minimum and maximum are integers")
    if low is not None and high is not None:
        bounds = f"must be between {low} and {high}"
    else:
        bounds = f"must be >= {low}" if low is not None else f"must be <= {high}"
    from_text = location != "body"

    def check(value: Any) -> Any:
        if from_text:
            if not _DIGITS.fullmatch(value):
                raise _Refused("must be an integer")
            value = int(value)
        elif type(value) is not int:  # not bool, not float
            raise _Refused("must be an integer")
        if (low is not None and value < low) or (high is not None and value > high):
            raise _Refused(bounds)
        return value

    return check


def _boolean_check(value: Any) -> Any:
    if not isinstance(value, bool):
        raise _Refused("must be true or false")
    return value


def _array_check(schema: Schema, where: str) -> Check:
    """A JSON array whose items each pass `items`; refused with the first bad item named."""
    items = schema.get("items")
    low = schema.get("minItems", 0)
    high = schema.get("maxItems")
    if not isinstance(items, Mapping) or items.get("type") == "array":
        raise SchemaError(f"{where}: an array's items are one schema, not an array")
    if not _are_counts(low, high):
        raise SchemaError(f"{where}: minItems and maxItems are counts")
    item_check = compile_value(items, "body", f"{where} items")
    count = (
        f"must list {low} to {high} items"
        if high is not None
        else f"must list at least {low} items"
    )

    def check(value: Any) -> Any:
        if not isinstance(value, list):
            raise _Refused("must be an array")
        if len(value) < low or (high is not None and len(value) > high):
            raise _Refused(count)
        checked = []
        for index, item in enumerate(value):
            try:
                checked.append(item_check(item))
            except _Refused as refused:
                raise _Refused(f"item {index} {refused.message}") from None
        return checked

    return check


def compile_value(schema: Schema, location: str, where: str) -> Check:
    """The check of one parameter or body field; SchemaError for what it cannot enforce."""
    kind = schema.get("type")
    keywords = _VALUE_KEYWORDS.get(kind) if isinstance(kind, str) else None
    if keywords is None:
        raise SchemaError(f"{where}: type {kind!r} is not compiled")
    unknown = set(schema) - keywords - _ANNOTATIONS
    if unknown:
        raise SchemaError(f"{where}: {', '.join(sorted(unknown))} not compiled for a {kind}")
    if kind == "string":
        check = _string_check(schema, location, where)
    elif kind == "integer":
        check = _integer_check(schema, location, where)
    elif location != "body":
        raise SchemaError(f"{where}: a {kind} is only taken in a JSON body")
    elif kind == "boolean":
        check = _boolean_check
    else:
        check = _array_check(schema, where)
    json_check = check if location == "body" else compile_value(schema, "body", where)
    samples = [*schema.get("examples", ()), *([schema["default"]] if "default" in schema else [])]
    for sample in samples:
        try:
            json_check(sample)
        except _Refused as refused:
            raise SchemaError(f"{where}: example or default {sample!r} {refused.message}") from None
    return check


# A route's inputs.


class _Field(NamedTuple):  # NamedTuples: a fraction of a dataclass's cost at import
    name: str
    check: Check
    required: bool
    default: Any
    not_found: str | None = None
    description: str | None = None

    @property
    def always_given(self) -> bool:
        return self.required or self.default is not _NO_DEFAULT


def _field(
    name: str,
    schema: Schema,
    required: bool,
    location: str,
    where: str,
    not_found: str | None = None,
) -> _Field:
    if required and "default" in schema:
        raise SchemaError(f"{where}: required with a default")
    return _Field(
        name,
        compile_value(schema, location, where),
        required,
        schema.get("default", _NO_DEFAULT),
        not_found,
        schema.get("description"),
    )


def _param_field(param: Param, where: str) -> _Field:
    where = f"{where} {param.location} {param.name}"
    if param.location == "path" and not param.required:
        raise SchemaError(f"{where}: a path parameter is required")
    if param.not_found is not None and param.location != "path":
        raise SchemaError(f"{where}: not_found is for path parameters")
    return _field(param.name, param.schema, param.required, param.location, where, param.not_found)


class _Body(NamedTuple):
    fields: tuple[_Field, ...]
    names: frozenset[str]
    min_properties: int


def _compile_body(schema: Schema, where: str) -> _Body:
    unknown = set(schema) - _BODY_KEYWORDS
    if unknown:
        raise SchemaError(f"{where}: {', '.join(sorted(unknown))} not compiled for a body")
    if schema.get("type") != "object":
        raise SchemaError(f"{where}: a body is a JSON object")
    if schema.get("additionalProperties") is not False:
        raise SchemaError(f"{where}: a body refuses unknown fields (additionalProperties: false)")
    properties: Mapping[str, Schema] = schema.get("properties", {})
    required = set(schema.get("required", ()))
    if required - properties.keys():
        missing = sorted(required - properties.keys())
        raise SchemaError(f"{where}: required fields it has no properties for: {missing}")
    min_properties = schema.get("minProperties", 0)
    if not _are_counts(min_properties):
        raise SchemaError(f"{where}: minProperties is a count")
    fields = tuple(
        _field(name, field_schema, name in required, "body", f"{where} body {name}")
        for name, field_schema in properties.items()
    )
    return _Body(fields, frozenset(properties), min_properties)


class _Shape(NamedTuple):
    """What one location of a route declares: its names, and those always given."""

    where: str
    declared: frozenset[str]
    always: frozenset[str]

    @classmethod
    def of(cls, where: str, fields: Iterable[_Field]) -> _Shape:
        fields = tuple(fields)
        always = frozenset(field.name for field in fields if field.always_given)
        return cls(where, frozenset(field.name for field in fields), always)


class Values(Mapping[str, object]):
    """One location's inputs by name, as the handler gets them: what was sent, typed (integers,
    UUIDs), or the declared default. Asking for a name the route does not declare, or reading
    an input that may be absent as if it were always there, is the handler's bug: an error
    on its first call, whatever the request."""

    __slots__ = ("_values", "_shape")

    def __init__(self, values: dict[str, object], shape: _Shape) -> None:
        self._values = values
        self._shape = shape

    def __getitem__(self, name: str) -> object:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Values({self._values!r})"

    def value(self, name: str, kind: type[T]) -> T:
        """An input that is always given: required, or with a default."""
        found = self.optional(name, kind)
        if found is None or name not in self._shape.always:
            raise LookupError(f"{self._shape.where} {name} may be absent: read it with optional()")
        return found

    def optional(self, name: str, kind: type[T]) -> T | None:
        """An input, or None when it was not sent and has no default."""
        if name not in self._shape.declared:
            raise LookupError(f"{self._shape.where} declares no input {name!r}")
        found = self._values.get(name)
        if found is not None and not isinstance(found, kind):
            where = f"{self._shape.where} {name}"
            raise TypeError(f"{where} is {type(found).__name__}, not {kind.__name__}")
        return found


NO_VALUES = Values({}, _Shape("", frozenset(), frozenset()))


@dataclass(frozen=True, slots=True)
class Inputs:
    """A request's validated inputs. `sent_body` is the JSON object exactly as sent, for what
    must see the request itself (an idempotency fingerprint)."""

    route: RouteSpec
    principal: Principal | None
    path: Values
    headers: Values
    query: Values
    body: Values
    sent_body: Mapping[str, Any]

    @property
    def caller(self) -> Principal:
        """The authenticated caller of a route that takes a token."""
        if self.principal is None:
            raise LookupError(f"{self.route.label} authenticates no caller")
        return self.principal


def _not_found(code: str) -> ProblemError:
    return ProblemError(404, code, code.replace("_", " ").capitalize())


class RouteInputs:
    """A route's inputs as its table entry declares them, compiled once."""

    def __init__(self, route: RouteSpec) -> None:
        self.route = route
        where = route.label
        by_location: dict[str, list[_Field]] = {"path": [], "header": [], "query": []}
        for param in route.params:
            by_location[param.location].append(_param_field(param, where))
        for location, fields in by_location.items():
            names = [field.name.lower() if location == "header" else field.name for field in fields]
            if len(set(names)) != len(names):
                raise SchemaError(f"{where}: a {location} parameter declared twice")
        path_names = {field.name for field in by_location["path"]}
        if path_names != set(_TEMPLATE_PARAMETER.findall(route.path)):
            raise SchemaError(f"{where}: path parameters {sorted(path_names)} and the template")
        self._path = tuple(by_location["path"])
        self._headers = tuple(by_location["header"])
        self._query = tuple(by_location["query"])
        self._shapes = {
            location: _Shape.of(where, fields) for location, fields in by_location.items()
        }
        self._query_names = frozenset(field.name for field in self._query)
        self._refuses_unknown_query = route.unknown_query == "refused"
        self._reads_query = bool(self._query) or self._refuses_unknown_query
        self._body = _compile_body(route.body, where) if route.body is not None else None
        self._shapes["body"] = _Shape.of(where, self._body.fields if self._body else ())

    async def read(self, request: Request, principal: Principal | None) -> Inputs:
        """The request's inputs, or the problem that refuses them (see the module docstring)."""
        path = self._read_path(request.path_params) if self._path else NO_VALUES
        headers = self._read_headers(request.headers) if self._headers else NO_VALUES
        document = await request_json(request) if self._body is not None else None
        errors: Errors = []
        query = NO_VALUES
        if self._reads_query:
            query = self._read_query(request.query_params.multi_items(), errors)
        body = NO_VALUES
        sent: Mapping[str, Any] = NO_VALUES
        if self._body is not None:
            if isinstance(document, dict):
                sent = document
                body = self._read_body(self._body, document, errors)
            else:
                errors.append(field_error("body", "body", "must be a JSON object"))
        if errors:
            raise ValidationError(errors)
        return Inputs(self.route, principal, path, headers, query, body, sent)

    def _read_path(self, given: Mapping[str, Any]) -> Values:
        values: dict[str, object] = {}
        errors: Errors = []
        for field in self._path:
            try:
                values[field.name] = field.check(given[field.name])
            except _OtherSpelling:
                raise problem_for_status(404) from None
            except _Unstorable as refused:
                errors.append(field_error(field.name, "path", refused.message))
            except _Refused as refused:
                if field.not_found is not None:
                    raise _not_found(field.not_found) from None
                errors.append(field_error(field.name, "path", refused.message))
        if errors:
            raise ValidationError(errors)
        return Values(values, self._shapes["path"])

    def _read_headers(self, given: Mapping[str, str]) -> Values:
        values: dict[str, object] = {}
        for field in self._headers:
            required, invalid = header_problem_codes(field.name)
            raw = given.get(field.name)
            if not raw:
                if field.required:
                    raise ProblemError(
                        400, required, f"{field.name} required", f"Send the {field.name} header"
                    )
                if field.default is not _NO_DEFAULT:
                    values[field.name] = field.default
                continue
            try:
                values[field.name] = field.check(raw)
            except _Refused as refused:
                detail = field.description or f"{field.name} {refused.message}"
                raise ProblemError(400, invalid, f"Invalid {field.name}", detail) from None
        return Values(values, self._shapes["header"])

    def _read_query(self, items: Iterable[tuple[str, str]], errors: Errors) -> Values:
        given: dict[str, str] = {}
        for name, value in items:
            if name not in self._query_names:
                if self._refuses_unknown_query:
                    errors.append(field_error(name, "query", "unknown parameter"))
            elif name in given:
                errors.append(field_error(name, "query", "given more than once"))
            else:
                given[name] = value
        values = _read_fields(self._query, given, "query", errors)
        return Values(values, self._shapes["query"])

    def _read_body(self, body: _Body, sent: Mapping[str, Any], errors: Errors) -> Values:
        values = _read_fields(body.fields, sent, "body", errors)
        for name in sorted(sent.keys() - body.names):
            errors.append(field_error(name, "body", "unknown field"))
        if len(sent) < body.min_properties:
            fields = "one field" if body.min_properties == 1 else f"{body.min_properties} fields"
            errors.append(field_error("body", "body", f"give at least {fields}"))
        return Values(values, self._shapes["body"])


def _read_fields(
    fields: Iterable[_Field], given: Mapping[str, Any], location: str, errors: Errors
) -> dict[str, object]:
    values: dict[str, object] = {}
    for field in fields:
        if field.name in given:
            try:
                values[field.name] = field.check(given[field.name])
            except _Refused as refused:
                errors.append(field_error(field.name, location, refused.message))
        elif field.required:
            errors.append(field_error(field.name, location, "is required"))
        elif field.default is not _NO_DEFAULT:
            values[field.name] = field.default
    return values


async def _caller(request: Request, auth: Auth) -> Principal | None:
    if auth == "none":
        return None
    if auth == "platform":  # a token of no tenant, on any host: not `authenticate`'s check
        return await authenticate_platform_admin(request)
    principal = await authenticate(request)
    if auth == "admin":
        require_role(principal, (ADMIN_ROLE,))
    return principal


def guarded(route: RouteSpec, handler: Handler) -> Handler:
    """`handler` behind its route's token and input checks (compiled here, once)."""
    inputs = RouteInputs(route)

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        principal = await _caller(request, route.auth)
        request.scope.setdefault("state", {})[INPUTS_STATE_KEY] = await inputs.read(
            request, principal
        )
        return await handler(request)

    return endpoint


def inputs_of(request: Request) -> Inputs:
    """The inputs `guarded` validated for this request."""
    inputs = request.scope.get("state", {}).get(INPUTS_STATE_KEY)
    if not isinstance(inputs, Inputs):
        raise LookupError("no validated inputs: the handler is not behind starlette_routes")
    return inputs
