"""The /docs page: Swagger UI from the swagger-ui-bundle-v2 package, served by this server (no CDN), with
SMART's OAuth flows behind its Authorize button.

https://swagger.io/docs/open-source-tools/swagger-ui/usage/oauth2/ and https://pypi.org/project/swagger-ui-bundle-v2/
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

ASSETS = "/docs/assets"
REDIRECT = "/docs/oauth2-redirect"
DEV_CLIENT = "careloop-dev"  # the first start's development client (server/cli.py), offered in the dialog


def install_docs(app: FastAPI, openapi_url: str = "/openapi.json") -> None:
    """Serve /docs, its assets and its OAuth redirect page from the installed package."""
    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui-assets")

    async def docs(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url, title="CareLoop FHIR server - API", oauth2_redirect_url=REDIRECT,
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
            # PKCE for the authorization code flow, as SMART requires of every client (S256)
            init_oauth={"clientId": DEV_CLIENT, "usePkceWithAuthorizationCodeGrant": True},
            swagger_ui_parameters={"persistAuthorization": False})

    async def redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    app.add_route("/docs", docs, include_in_schema=False)
    app.add_route(REDIRECT, redirect, include_in_schema=False)
