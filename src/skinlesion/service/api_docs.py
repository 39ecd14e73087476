"""The API documentation pages (Swagger UI at ``/docs``, ReDoc at ``/redoc``), served offline.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so on a machine without
internet — a hospital network, a laptop on a train — ``/docs`` is blank. The
``fastapi-offline`` package (MIT) bundles those assets; this module serves them
from ``/docs-static`` and renders FastAPI's page templates pointing there.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/docs-static"
SWAGGER_JS = "swagger-ui-bundle.js"
SWAGGER_CSS = "swagger-ui.css"
REDOC_JS = "redoc.standalone.js"
FAVICON = "favicon.png"


def assets_dir() -> Path:
    """Folder of the bundled Swagger UI / ReDoc files (from ``fastapi-offline``)."""
    return Path(str(resources.files("fastapi_offline") / "static"))


def add_offline_docs(app: FastAPI, *, title: str) -> None:
    """Serve ``/docs`` and ``/redoc`` from local assets.

    Create the app with ``docs_url=None, redoc_url=None`` first, so FastAPI does not add
    its CDN-backed pages.

    Args:
        app: The FastAPI app.
        title: Page title.
    """
    app.mount(ASSETS_PATH, StaticFiles(directory=assets_dir()), name="docs-static")

    def base(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = base(request)
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{title} — API",
            swagger_js_url=f"{root}{ASSETS_PATH}/{SWAGGER_JS}",
            swagger_css_url=f"{root}{ASSETS_PATH}/{SWAGGER_CSS}",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/{FAVICON}")

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = base(request)
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{title} — API",
            redoc_js_url=f"{root}{ASSETS_PATH}/{REDOC_JS}",
            redoc_favicon_url=f"{root}{ASSETS_PATH}/{FAVICON}", with_google_fonts=False)
