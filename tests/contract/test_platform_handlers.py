"""The platform function's Lambda handler with real API Gateway v2 events: a tenant created,
read and given new domains, as API Gateway hands the requests over (base64 bodies, the sample
events' query strings, which these routes ignore); the token rules before the database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import functions.platform.app as platform_function
from edgemart.services import Services
from tests.conftest import settings_for
from tests.contract.lambda_harness import (
    FakeLambdaContext,
    body_of,
    headers_of,
    installed_services,
    load_event,
    with_path,
    with_request,
)
from tests.support.tokens import SECRET, auth


@pytest.fixture
def platform_services(module_database_url: str) -> Iterator[Services]:
    settings = settings_for(
        module_database_url, jwt_secret=SECRET, rate_limit_overrides=(("admin", 0, 60),)
    )
    with installed_services(platform_function.app, settings) as services:
        yield services


def bearer(**claims: Any) -> dict[str, str]:
    return {**auth("operator", **claims), "Content-Type": "application/json"}


PLATFORM_ADMIN = {"roles": ["platform_admin"]}


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    response: dict[str, Any] = platform_function.handler(event, FakeLambdaContext())
    return response


def test_create_read_and_replace_domains(platform_services: Services) -> None:
    slug = f"lambda-{uuid.uuid4().hex[:8]}"
    created = invoke(
        with_request(
            load_event("apigw_v2_post_platform_tenants.json"),
            bearer(**PLATFORM_ADMIN),
            {"slug": slug, "name": "Lambda market", "domains": [f"{slug}.Example.com"]},
        )
    )
    assert created["statusCode"] == 201, created
    assert headers_of(created)["location"] == f"/platform/tenants/{slug}"
    tenant = body_of(created)
    assert (tenant["slug"], tenant["domains"]) == (slug, [f"{slug}.example.com"])

    read = invoke(
        with_path(
            with_request(load_event("apigw_v2_get_platform_tenant.json"), bearer(**PLATFORM_ADMIN)),
            f"/platform/tenants/{slug}",
        )
    )
    assert read["statusCode"] == 200 and body_of(read) == tenant

    replaced = invoke(
        with_path(
            with_request(
                load_event("apigw_v2_put_platform_tenant_domains.json"),
                bearer(**PLATFORM_ADMIN),
                {"domains": [f"shop.{slug}.example.com"]},
            ),
            f"/platform/tenants/{slug}/domains",
        )
    )
    assert replaced["statusCode"] == 200, replaced
    assert body_of(replaced) == {**tenant, "domains": [f"shop.{slug}.example.com"]}


def test_the_sample_get_reads_the_default_tenant(platform_services: Services) -> None:
    read = invoke(
        with_request(load_event("apigw_v2_get_platform_tenant.json"), bearer(**PLATFORM_ADMIN))
    )
    assert read["statusCode"] == 200
    assert body_of(read)["id"] == "00000000-0000-0000-0000-000000000001"


@pytest.mark.parametrize(
    ("claims", "status"),
    [
        (None, 401),
        ({"roles": ["admin"]}, 403),
        ({**PLATFORM_ADMIN, "org_id": "default"}, 403),
    ],
)
def test_tokens_are_refused_as_problems(
    platform_services: Services, claims: dict[str, Any] | None, status: int
) -> None:
    headers = bearer(**claims) if claims is not None else {"Content-Type": "application/json"}
    answer = invoke(with_request(load_event("apigw_v2_put_platform_tenant_domains.json"), headers))
    assert answer["statusCode"] == status
    assert headers_of(answer)["content-type"] == "application/problem+json"
    assert body_of(answer)["code"] == ("unauthorized" if status == 401 else "forbidden")
