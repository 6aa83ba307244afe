"""Route inputs compiled from the route table: what each JSON Schema keyword admits and
refuses, in which order and with which problem, the keywords refused at compile time, and
agreement with a reference JSON Schema validator on every body the table declares."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from typing import Any, Literal

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from edgemart.errors import ProblemError
from edgemart.requestinputs import Inputs, RouteInputs, SchemaError, Values
from edgemart.routetable import ROUTES, Param, RouteSpec, Schema
from edgemart.validation import InvalidJsonError, UnsupportedMediaTypeError, text_problem

PRODUCT = "8a5f3e1c-2b4d-4c6e-9f80-1a2b3c4d5e6f"
JSON = (("content-type", "application/json"),)


def route(
    *params: Param,
    body: Schema | None = None,
    path: str = "/things",
    unknown_query: Literal["refused", "ignored"] = "refused",
) -> RouteSpec:
    return RouteSpec(
        "POST" if body is not None else "GET",
        path,
        "tests",
        "probe",
        "A route of this test's own",
        rate_limit=None,
        cache_rule=None,
        auth="none",
        params=params,
        body=body,
        unknown_query=unknown_query,
    )


def body_of(**properties: Schema) -> dict[str, Any]:
    required = [name for name, schema in properties.items() if schema.get("x-test-required")]
    return {
        "type": "object",
        "properties": {
            name: {k: v for k, v in schema.items() if k != "x-test-required"}
            for name, schema in properties.items()
        },
        "required": required,
        "additionalProperties": False,
    }


def read(
    spec: RouteSpec,
    *,
    path_params: dict[str, str] | None = None,
    query: str = "",
    headers: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
) -> Inputs:
    scope = {
        "type": "http",
        "method": spec.method,
        "path": spec.path,
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in headers],
        "path_params": path_params or {},
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return asyncio.run(RouteInputs(spec).read(Request(scope, receive), None))


def refusal(spec: RouteSpec, **request: Any) -> ProblemError:
    with pytest.raises(ProblemError) as raised:
        read(spec, **request)
    return raised.value


def errors_of(spec: RouteSpec, **request: Any) -> dict[str, str]:
    problem = refusal(spec, **request)
    assert (problem.status, problem.code) == (422, "validation_error")
    return {error["field"]: error["message"] for error in problem.extra["errors"]}


def sent(document: Any) -> dict[str, Any]:
    return {"body": json.dumps(document).encode(), "headers": JSON}


# Compiling.


@pytest.mark.parametrize("spec", ROUTES, ids=lambda spec: spec.label)
def test_every_route_of_the_table_compiles(spec: RouteSpec) -> None:
    RouteInputs(spec)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "number"},
        {"type": "array"},  # items are required
        {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
        {"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
        {"type": "array", "items": {"type": "integer"}, "minItems": -1},
        {"type": "array", "items": {"type": "string", "maxLength": 2}, "examples": [["abc"]]},
        {"type": "null"},
        {"enum": ["a", "b"]},
        {"type": "string", "format": "email"},
        {"type": "string", "const": "x"},
        {"type": "string", "maxLength": 5, "x-unknown": True},
        {"type": "string", "minimum": 1},
        {"type": "integer", "multipleOf": 2},
        {"type": "integer", "exclusiveMinimum": 0},
        {"type": "integer", "minimum": 1.5},
        {"type": "string", "maxLength": "5"},
        {"type": "string", "enum": [1, 2]},
        {"type": "string", "pattern": "^[a-z]+$", "x-multiline": True},
        {"type": "integer", "minimum": 1, "default": 0},
        {"type": "string", "maxLength": 3, "examples": ["long"]},
    ],
)
def test_a_keyword_it_does_not_enforce_fails_at_compile_time(schema: Schema) -> None:
    with pytest.raises(SchemaError):
        RouteInputs(route(body=body_of(field=schema)))


@pytest.mark.parametrize(
    "spec",
    [
        route(body={"type": "object", "properties": {}}),  # unknown fields must be refused
        route(body={"type": "object", "properties": {}, "additionalProperties": True}),
        route(body={**body_of(), "patternProperties": {}}),
        route(body={**body_of(), "required": ["missing"]}),
        route(body={"type": "array", "additionalProperties": False}),
        route(Param("flag", "query", {"type": "boolean"})),  # booleans in a JSON body only
        route(Param("tags", "query", {"type": "array", "items": {"type": "string"}})),
        route(Param("id", "path", {"type": "string"})),  # not required
        route(Param("id", "path", {"type": "string"}, required=True)),  # not in the template
        route(path="/things/{id}"),  # a template parameter nobody declares
        route(Param("q", "query", {"type": "string"}, not_found="thing_not_found")),
        route(Param("q", "query", {"type": "string", "default": "x"}, required=True)),
        route(Param("q", "query", {"type": "string"}), Param("q", "query", {"type": "string"})),
    ],
)
def test_a_route_it_cannot_enforce_fails_at_compile_time(spec: RouteSpec) -> None:
    with pytest.raises(SchemaError):
        RouteInputs(spec)


# Body fields.

FIELDS = route(
    body=body_of(
        quantity={"type": "integer", "minimum": 1, "maximum": 10, "x-test-required": True},
        flag={"type": "boolean"},
        price={"type": "integer"},
        name={"type": "string", "maxLength": 10},
        missing={"type": "string", "maxLength": 10, "x-test-required": True},
    )
)


def test_body_types_are_strict_and_every_bad_field_is_named_at_once() -> None:
    document = {"quantity": "1", "flag": "yes", "price": 1.5, "name": 3, "zz": 1, "extra": 1}
    assert errors_of(FIELDS, **sent(document)) == {
        "quantity": "must be an integer",
        "flag": "must be true or false",
        "price": "must be an integer",
        "name": "must be a string",
        "missing": "is required",
        "extra": "unknown field",
        "zz": "unknown field",
    }
    problem = refusal(FIELDS, **sent(document))
    assert [e["field"] for e in problem.extra["errors"]][-2:] == ["extra", "zz"]  # sorted, last
    assert {e["location"] for e in problem.extra["errors"]} == {"body"}


@pytest.mark.parametrize(
    ("quantity", "message"),
    [(True, "must be an integer"), (1.0, "must be an integer"), (0, "must be between 1 and 10")],
)
def test_booleans_and_floats_are_not_integers_and_bounds_hold(quantity: Any, message: str) -> None:
    assert errors_of(FIELDS, **sent({"quantity": quantity, "missing": "m"})) == {
        "quantity": message
    }


def test_a_valid_body_is_handed_over_typed_and_as_sent() -> None:
    document = {"quantity": 2, "name": "x", "flag": False, "missing": "m"}
    inputs = read(FIELDS, **sent(document))
    assert inputs.body.value("quantity", int) == 2
    assert inputs.body.optional("name", str) == "x"
    assert inputs.body.optional("flag", bool) is False
    assert inputs.body.optional("price", int) is None
    assert dict(inputs.body) == document
    assert inputs.sent_body == document


def test_text_follows_the_text_rule_and_descriptions_keep_line_breaks() -> None:
    spec = route(
        body=body_of(
            name={"type": "string", "maxLength": 10},
            description={"type": "string", "maxLength": 10, "x-multiline": True},
            slug={"type": "string", "maxLength": 10},
        )
    )
    document = {"name": "a\x00", "description": "two\nlines", "slug": "\ud800"}
    assert errors_of(spec, **sent(document)) == {
        "name": "must be valid Unicode text without NUL characters",
        "slug": "must be valid Unicode text without NUL characters",
    }
    accepted = read(spec, **sent({"description": "two\n\tlines"}))
    assert accepted.body.optional("description", str) == "two\n\tlines"
    assert errors_of(spec, **sent({"description": "bell\x07"})) == {
        "description": "must not contain control characters"
    }
    assert errors_of(spec, **sent({"name": "tab\there"})) == {
        "name": "must not contain control characters"
    }


def test_string_bounds_pattern_enum_and_uuid() -> None:
    spec = route(
        body=body_of(
            name={"type": "string", "minLength": 1, "maxLength": 3},
            slug={"type": "string", "pattern": "^[a-z]{3}$"},
            mode={"type": "string", "enum": ["direct", "queued"]},
            id={"type": "string", "format": "uuid"},
        )
    )
    document = {"name": "", "slug": "ABC", "mode": "later", "id": "urn:uuid:" + PRODUCT}
    assert errors_of(spec, **sent(document)) == {
        "name": "must be 1 to 3 characters",
        "slug": "must match ^[a-z]{3}$",
        "mode": "must be one of direct, queued",
        "id": "must be a UUID",
    }
    assert errors_of(spec, **sent({"id": 5})) == {"id": "must be a UUID"}
    inputs = read(spec, **sent({"name": "abc", "slug": "abc", "mode": "queued", "id": PRODUCT}))
    assert inputs.body.optional("id", uuid.UUID) == uuid.UUID(PRODUCT)
    assert read(spec, **sent({"id": PRODUCT.upper()})).body["id"] == uuid.UUID(PRODUCT)
    assert inputs.sent_body["id"] == PRODUCT  # as sent, for fingerprints


@pytest.mark.parametrize("document", [[], "text", 1, None])
def test_a_body_that_is_no_object_is_422(document: Any) -> None:
    assert errors_of(FIELDS, **sent(document)) == {"body": "must be a JSON object"}


def test_a_body_that_is_no_json_is_400_and_one_sent_as_something_else_415() -> None:
    with pytest.raises(InvalidJsonError):
        read(FIELDS, body=b"{", headers=JSON)
    with pytest.raises(InvalidJsonError):
        read(FIELDS, body=b"", headers=JSON)
    with pytest.raises(UnsupportedMediaTypeError):
        read(FIELDS, body=b'{"quantity": 1}', headers=(("content-type", "text/plain"),))


ARRAY = route(
    body=body_of(
        tags={
            "type": "array",
            "items": {"type": "string", "maxLength": 3, "pattern": "^[a-z]+$"},
            "minItems": 1,
            "maxItems": 2,
        }
    )
)


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ("abc", "must be an array"),
        ({"0": "abc"}, "must be an array"),
        ([], "must list 1 to 2 items"),
        (["a", "b", "c"], "must list 1 to 2 items"),
        (["ab", 1], "item 1 must be a string"),
        (["ab", "ABC"], "item 1 must match ^[a-z]+$"),
        (["abcd"], "item 0 must be 0 to 3 characters"),
        (["a\u0000"], "item 0 must be valid Unicode text without NUL characters"),
    ],
)
def test_an_array_holds_its_bounds_and_each_item_to_its_schema(tags: Any, message: str) -> None:
    assert errors_of(ARRAY, **sent({"tags": tags})) == {"tags": message}


def test_an_array_is_handed_over_as_a_list_of_checked_items() -> None:
    assert read(ARRAY, **sent({"tags": ["ab", "c"]})).body.optional("tags", list) == ["ab", "c"]


def test_min_properties() -> None:
    spec = route(body={**body_of(name={"type": "string", "maxLength": 3}), "minProperties": 1})
    assert errors_of(spec, **sent({})) == {"body": "give at least one field"}
    assert errors_of(spec, **sent({"other": 1})) == {"other": "unknown field"}
    assert dict(read(spec, **sent({"name": "x"})).body) == {"name": "x"}


# Query parameters.

QUERY = route(
    Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 50, "default": 20}),
    Param("min_price", "query", {"type": "integer", "minimum": 0}),
    Param("q", "query", {"type": "string", "minLength": 1, "maxLength": 5}),
    Param("sort", "query", {"type": "string", "enum": ["new", "old"], "default": "new"}),
)


def test_query_integers_are_digits_and_defaults_fill_in() -> None:
    inputs = read(QUERY, query="limit=7&min_price=-0")
    assert inputs.query.value("limit", int) == 7
    assert inputs.query.optional("min_price", int) == 0
    assert inputs.query.value("sort", str) == "new"
    assert inputs.query.optional("q", str) is None
    assert read(QUERY).query.value("limit", int) == 20
    for raw in ("1.5", "abc", "+1", " 1", "1e1", "", "9" * 20, "٣"):
        assert errors_of(QUERY, query=f"limit={raw}") == {"limit": "must be an integer"}


def test_every_bad_query_parameter_is_named_at_once() -> None:
    query = "limit=0&min_price=-1&q=&sort=cheap&colour=red&q=again&sort=new"
    problem = refusal(QUERY, query=query)
    assert [(e["field"], e["message"]) for e in problem.extra["errors"]] == [
        ("colour", "unknown parameter"),
        ("q", "given more than once"),
        ("sort", "given more than once"),
        ("limit", "must be between 1 and 50"),
        ("min_price", "must be >= 0"),
        ("q", "must be 1 to 5 characters"),  # the first value is the one judged
        ("sort", "must be one of new, old"),
    ]
    problem = refusal(QUERY, query="q=%00&colour=red")
    assert [(e["field"], e["location"]) for e in problem.extra["errors"]] == [
        ("colour", "query"),
        ("q", "query"),
    ]


def test_a_route_that_ignores_its_query_string_ignores_unknown_parameters() -> None:
    assert not read(route(unknown_query="ignored"), query="utm_source=mail").query
    assert errors_of(route(), query="utm_source=mail") == {"utm_source": "unknown parameter"}


def test_a_required_query_parameter() -> None:
    spec = route(Param("q", "query", {"type": "string", "maxLength": 5}, required=True))
    assert errors_of(spec) == {"q": "is required"}
    assert read(spec, query="q=").query.value("q", str) == ""


# Path parameters.

BY_ID = route(Param("id", "path", {"type": "string", "format": "uuid"}, True), path="/t/{id}")
BY_SLUG = route(
    Param(
        "slug",
        "path",
        {"type": "string", "pattern": "^[a-z-]{3,9}$"},
        True,
        not_found="thing_not_found",
    ),
    path="/t/{slug}",
)


@pytest.mark.parametrize(
    "spelling",
    [PRODUCT.upper(), "{" + PRODUCT + "}", PRODUCT.replace("-", ""), "urn:uuid:" + PRODUCT],
)
def test_a_path_uuid_in_another_spelling_is_404(spelling: str) -> None:
    problem = refusal(BY_ID, path_params={"id": spelling})
    assert (problem.status, problem.code) == (404, "not_found")


def test_a_path_uuid() -> None:
    assert read(BY_ID, path_params={"id": PRODUCT}).path.value("id", uuid.UUID) == uuid.UUID(
        PRODUCT
    )
    assert errors_of(BY_ID, path_params={"id": "not-a-uuid"}) == {"id": "must be a UUID"}
    assert errors_of(BY_ID, path_params={"id": PRODUCT[:-1] + "\x00"}) == {
        "id": "must be valid Unicode text without NUL characters"
    }


def test_a_path_value_no_resource_can_have_is_the_routes_404() -> None:
    for slug in ("AB", "Not-A-Slug", "x" * 10):
        problem = refusal(BY_SLUG, path_params={"slug": slug})
        assert (problem.status, problem.code, problem.title) == (
            404,
            "thing_not_found",
            "Thing not found",
        )
    # Text no one can store is 422 whatever else is wrong with it: the text rule comes first.
    assert errors_of(BY_SLUG, path_params={"slug": "a\x00"}) == {
        "slug": "must be valid Unicode text without NUL characters"
    }
    assert read(BY_SLUG, path_params={"slug": "a-b"}).path.value("slug", str) == "a-b"


def test_path_problems_come_before_the_body_and_its_media_type() -> None:
    spec = dataclasses.replace(BY_ID, method="PUT", body=FIELDS.body)
    problem = refusal(spec, path_params={"id": "x"}, body=b"{", headers=(("content-type", "x"),))
    assert problem.status == 422 and problem.extra["errors"][0]["location"] == "path"


# Header parameters.

KEYED = route(
    Param(
        "Idempotency-Key",
        "header",
        {"type": "string", "pattern": "^[\\x20-\\x7e]{1,9}$", "description": "1 to 9 ASCII"},
        required=True,
    )
)


@pytest.mark.parametrize(
    ("value", "code", "detail"),
    [
        (None, "idempotency_key_required", "Send the Idempotency-Key header"),
        ("", "idempotency_key_required", "Send the Idempotency-Key header"),
        ("k" * 10, "invalid_idempotency_key", "1 to 9 ASCII"),
        ("caf\xe9", "invalid_idempotency_key", "1 to 9 ASCII"),
        ("a\tb", "invalid_idempotency_key", "1 to 9 ASCII"),
    ],
)
def test_a_header_parameter_is_400(value: str | None, code: str, detail: str) -> None:
    headers = () if value is None else (("Idempotency-Key", value),)
    problem = refusal(KEYED, headers=headers)
    assert (problem.status, problem.code, problem.detail) == (400, code, detail)


def test_a_header_parameter_is_read_whatever_its_case() -> None:
    inputs = read(KEYED, headers=(("idempotency-key", "k-1"),))
    assert inputs.headers.value("Idempotency-Key", str) == "k-1"


# What a handler reads.


def test_a_handler_reads_only_what_the_table_declares_as_declared() -> None:
    inputs = read(QUERY, query="q=abc")
    with pytest.raises(LookupError):
        inputs.query.optional("qq", str)  # not declared
    with pytest.raises(LookupError):
        inputs.query.value("q", str)  # may be absent: even when sent, read it as optional
    with pytest.raises(TypeError):
        inputs.query.value("limit", str)
    with pytest.raises(LookupError):
        inputs.caller  # noqa: B018 (a route without a token has no caller)
    assert isinstance(inputs.body, Values) and not inputs.body


# Agreement with a reference JSON Schema validator, on every body in the table.


def _junk() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**62), max_value=2**62),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=6),
        st.lists(st.integers(-9, 9), max_size=2),
    )


def _valid(schema: Schema) -> st.SearchStrategy[Any]:
    """Values `schema` admits (most of them: a pattern may yield a trailing line feed)."""
    kind = schema["type"]
    if kind == "array":
        low = schema.get("minItems", 0)
        return st.lists(_valid(schema["items"]), min_size=low, max_size=schema.get("maxItems", 5))
    if kind == "integer":
        return st.integers(schema.get("minimum", -100), schema.get("maximum", 100))
    if kind == "boolean":
        return st.booleans()
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if schema.get("format") == "uuid":
        return st.uuids().map(str)
    if "pattern" in schema:
        return st.from_regex(schema["pattern"])
    letters = st.characters(categories=("L", "N", "P", "Zs"))
    low = schema.get("minLength", 0)
    return st.text(letters, min_size=low, max_size=min(schema.get("maxLength", 40), low + 40))


def _near(schema: Schema) -> st.SearchStrategy[Any]:
    """Values at and around the edges of what `schema` admits."""
    kind = schema["type"]
    if kind == "array":
        low = schema.get("minItems", 0)
        high = schema.get("maxItems", 5)
        lengths = st.sampled_from(sorted({max(low - 1, 0), low, high, high + 1}))
        items = st.one_of(_valid(schema["items"]), _near(schema["items"]))
        return lengths.flatmap(lambda n: st.lists(items, min_size=n, max_size=n))
    if kind == "integer":
        low = schema.get("minimum", -100)
        high = schema.get("maximum", 100)
        edges = st.sampled_from([low - 1, low, high, high + 1])
        return st.one_of(edges, edges.map(float), edges.map(str))
    if kind == "boolean":
        return st.sampled_from(["true", 0, 1, None])
    low = schema.get("minLength", 0)
    high = schema.get("maxLength", 40)
    lengths = st.sampled_from(sorted({max(low - 1, 0), low, high, high + 1}))
    options = [
        st.text(max_size=8),
        st.text(st.characters(codec="ascii"), max_size=8),
        lengths.map(lambda n: "a" * n),
        lengths.map(lambda n: "A" * n),
    ]
    options += [st.sampled_from(schema["examples"])] if "examples" in schema else []
    if "enum" in schema:
        options.append(st.sampled_from(schema["enum"]).map(str.upper))
    if schema.get("format") == "uuid":
        options += [st.uuids().map(lambda u: str(u).upper()), st.uuids().map(lambda u: u.hex)]
        options += [st.uuids().map(lambda u: u.urn)]
    return st.one_of(options)


@st.composite
def _documents(draw: st.DrawFn, body: Schema) -> dict[str, Any]:
    """Mostly-valid bodies: each field valid, at an edge, of another type, or left out."""
    document: dict[str, Any] = {}
    for name, schema in body["properties"].items():
        if draw(st.integers(0, 9)) >= (9 if name in body["required"] else 5):
            continue  # left out
        kind = draw(st.integers(0, 9))  # hypothesis favours small numbers: valid ones
        value = _valid(schema) if kind < 7 else _near(schema) if kind < 9 else _junk()
        document[name] = draw(value)
    if draw(st.integers(0, 9)) == 9:
        document[draw(st.sampled_from(["unknown", "Name", ""]))] = draw(_junk())
    return document


def _stricter_than_json_schema(body: Schema, document: dict[str, Any]) -> bool:
    """Where this project is stricter than JSON Schema: the text rule, and an integral float
    (JSON Schema's `1.0` is an integer; this project's is not)."""
    for name, value in document.items():
        schema = body["properties"].get(name, {})
        if schema.get("type") == "array" and isinstance(value, list):
            items = {"properties": {"item": schema["items"]}}
            if any(_stricter_than_json_schema(items, {"item": item}) for item in value):
                return True
            continue
        multiline = schema.get("x-multiline", False)
        if isinstance(value, str) and text_problem(value, multiline=multiline) is not None:
            return True
        if isinstance(value, float) and value.is_integer() and schema.get("type") == "integer":
            return True
    return False


BODIES = [spec for spec in ROUTES if spec.body is not None]


@pytest.mark.parametrize("spec", BODIES, ids=lambda spec: spec.label)
def test_bodies_are_judged_as_json_schema_judges_them(spec: RouteSpec) -> None:
    assert spec.body is not None
    body = spec.body
    reference = jsonschema.Draft202012Validator(
        body, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    bare = dataclasses.replace(spec, path="/x", params=(), unknown_query="ignored")
    outcomes: set[bool] = set()

    @settings(max_examples=300, deadline=None, derandomize=True, database=None)
    @given(document=_documents(body))
    def check(document: dict[str, Any]) -> None:
        try:
            read(bare, **sent(document))
            accepted = True
        except ProblemError as problem:
            assert (problem.status, problem.code) == (422, "validation_error")
            accepted = False
        outcomes.add(accepted)
        if accepted:
            assert reference.is_valid(document), document
        elif reference.is_valid(document):
            assert _stricter_than_json_schema(body, document), document

    check()
    assert outcomes == {True, False}  # both sides of the line were tried
