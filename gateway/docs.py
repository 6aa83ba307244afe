"""`GET /docs`: Swagger UI for `/openapi.json`, served by the gateway alone.

The page is ours (below); Swagger UI's script and stylesheet are the files the
`swagger-ui-bundle-v2` package installs (Swagger UI 5, which reads OpenAPI 3.1), served from
`/docs/assets/<name>` by exact name from `ASSET_TYPES`, so nothing is fetched from the internet
and no other file of the bundle, let alone outside it, can be asked for. The page's
Content-Security-Policy holds the browser to the gateway's own origin as well.

Gateway-only: these routes are not in the route table (which lists the functions' routes, the
API that /openapi.json describes and template.yaml deploys), and no function imports this
module, so a Lambda never carries the bundle.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from edgemart.errors import ProblemError

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
OPENAPI_PATH = "/openapi.json"
# Long enough that a browsing session reuses the 1.5 MB script, short enough that a gateway
# upgraded to a newer bundle is picked up within the hour (the asset URLs are not versioned).
CACHE_CONTROL = "public, max-age=3600"
ASSET_TYPES: dict[str, str] = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}

INIT_SCRIPT = f"""window.ui = SwaggerUIBundle({{
  url: "{OPENAPI_PATH}",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout"
}});"""


def _script_hash(script: str) -> str:
    digest = hashlib.sha256(script.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


CONTENT_SECURITY_POLICY = (
    "default-src 'none'; "
    f"script-src 'self' {_script_hash(INIT_SCRIPT)}; "
    "style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; "
    "connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>edgemart API</title>
<link rel="stylesheet" href="{ASSETS_PATH}/swagger-ui.css">
<link rel="icon" type="image/png" href="{ASSETS_PATH}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{ASSETS_PATH}/swagger-ui-bundle.js"></script>
<script>{INIT_SCRIPT}</script>
</body>
</html>
"""


PAGE_HEADERS = {"Cache-Control": CACHE_CONTROL, "Content-Security-Policy": CONTENT_SECURITY_POLICY}


@functools.cache
def bundle_directory() -> Path:
    from swagger_ui_bundle import swagger_ui_path  # on the first request for an asset

    return Path(str(swagger_ui_path))


@functools.cache
def asset_bytes(name: str) -> bytes:
    return (bundle_directory() / name).read_bytes()


async def docs_page(request: Request) -> Response:
    return HTMLResponse(PAGE, headers=PAGE_HEADERS)


async def docs_asset(request: Request) -> Response:
    name: str = request.path_params["name"]
    media_type = ASSET_TYPES.get(name)
    if media_type is None:
        raise ProblemError(404, "not_found", "Not found", "The docs page has no such asset")
    return Response(
        asset_bytes(name), media_type=media_type, headers={"Cache-Control": CACHE_CONTROL}
    )


def docs_routes() -> list[BaseRoute]:
    return [
        Route(DOCS_PATH, docs_page, methods=["GET"]),
        Route(ASSETS_PATH + "/{name}", docs_asset, methods=["GET"]),
    ]
