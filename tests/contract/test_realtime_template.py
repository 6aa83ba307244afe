"""template.yaml's WebSocket API against the code: its routes reach functions/realtime, the
stage the committing functions post to is the one deployed, and each of them may post."""

from __future__ import annotations

from typing import Any

import pytest

from edgemart.routetable import ROUTES
from tests.contract.test_template import resources, template  # noqa: F401 (a fixture)

pytestmark = pytest.mark.live
COMMITTING_FUNCTIONS = ("PurchaseFunction", "OrderWorkerFunction", "StoreFunction")


def test_a_websocket_api_routes_connect_disconnect_and_default_to_realtime(
    template: dict[str, Any],  # noqa: F811
) -> None:
    (api,) = resources(template, "AWS::ApiGatewayV2::Api").values()
    assert api["ProtocolType"] == "WEBSOCKET"
    routes = resources(template, "AWS::ApiGatewayV2::Route")
    assert sorted(route["RouteKey"] for route in routes.values()) == [
        "$connect",
        "$default",
        "$disconnect",
    ]
    ((integration_name, integration),) = resources(
        template, "AWS::ApiGatewayV2::Integration"
    ).items()
    assert integration["IntegrationType"] == "AWS_PROXY"
    assert "${RealtimeFunction.Arn}" in integration["IntegrationUri"]["Fn::Sub"]
    for route in routes.values():
        assert route["Target"] == {"Fn::Sub": f"integrations/${{{integration_name}}}"}
    permissions = resources(template, "AWS::Lambda::Permission")
    assert any(p["FunctionName"] == {"Ref": "RealtimeFunction"} for p in permissions.values())
    websocket_routes = [route for route in ROUTES if route.websocket]
    assert [(r.method, r.path, r.function) for r in websocket_routes] == [
        ("GET", "/ws", "realtime")
    ]


def test_the_committing_functions_post_to_the_deployed_stage(
    template: dict[str, Any],  # noqa: F811
) -> None:
    (stage,) = resources(template, "AWS::ApiGatewayV2::Stage").values()
    functions = resources(template, "AWS::Serverless::Function")
    for name in COMMITTING_FUNCTIONS:
        endpoint = functions[name]["Environment"]["Variables"]["WS_API_ENDPOINT"]["Fn::Sub"]
        assert endpoint.startswith("https://${WebSocketApi}.execute-api.")
        assert endpoint.endswith(f"/{stage['StageName']}")
        statements = [
            statement
            for policy in functions[name]["Policies"]
            if isinstance(policy, dict) and "Statement" in policy
            for statement in policy["Statement"]
        ]
        allowed = [s for s in statements if s["Action"] == "execute-api:ManageConnections"]
        assert allowed, name
        assert f"/{stage['StageName']}/POST/@connections/*" in allowed[0]["Resource"]["Fn::Sub"]
