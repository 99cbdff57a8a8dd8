"""`/docs` (Swagger UI) and `/redoc` from the assets vendored under `static/vendor/`: the API
documentation works on a machine without internet and loads nothing from another host."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

STATIC = "/ui/static"
SWAGGER = f"{STATIC}/vendor/swagger-ui"
REDOC = f"{STATIC}/vendor/redoc"


def docs_router(title: str, openapi_url: str) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/docs")
    def swagger_ui() -> HTMLResponse:
        # validatorUrl: Swagger UI would otherwise ask validator.swagger.io for a badge.
        return get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{title} — API docs",
            swagger_js_url=f"{SWAGGER}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER}/swagger-ui.css",
            swagger_favicon_url=f"{SWAGGER}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None})

    @router.get("/redoc")
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=openapi_url, title=f"{title} — ReDoc",
                              redoc_js_url=f"{REDOC}/redoc.standalone.js",
                              redoc_favicon_url=f"{SWAGGER}/favicon-32x32.png",
                              with_google_fonts=False)

    return router
