"""The FastAPI app the plugin mounts under /kafka-workflows: API, pages, and its own OpenAPI docs.

The docs and the OpenAPI document are served behind authentication like every other route, so
the app has no public route (tests walk `app.routes` to check that). Errors of the core become
HTTP answers that name what is wrong: unknown name -> 404, bad field -> 422 (the shape of
FastAPI's own validation errors), stale view -> 409, no worker answered -> 504, no answer in time
(broker away) -> 503, too many actions in flight -> 429 with Retry-After (see offload.py).

Every response of the app carries a Content-Security-Policy that allows scripts and styles from
the app's own origin only (no inline script, no `unsafe-inline`, no `eval`), plus `nosniff`; the
Swagger page alone may also load Swagger UI from its CDN. A value that slips into a page as markup
still cannot run.
"""

from __future__ import annotations

import html
from typing import Any

from confluent_kafka import KafkaException
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kafka_workflows.errors import DeliveryError
from kafka_workflows.kafka.errors import kafka_error
from kafka_workflows.monitor.service import Conflict, Invalid, NoAnswer, NotFound
from kafka_workflows_airflow.api import pages, routes
from kafka_workflows_airflow.api.deps import READ
from kafka_workflows_airflow.api.offload import RETRY_AFTER, TooBusy, Unavailable

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; form-action 'self'; frame-ancestors 'self'; base-uri 'none'; object-src 'none'")
SWAGGER = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5"
DOCS_CSP = (f"default-src 'none'; script-src 'self' {SWAGGER}/; style-src 'self' {SWAGGER}/; "
            "img-src 'self' data: https://fastapi.tiangolo.com; connect-src 'self'; frame-ancestors 'self'; "
            "base-uri 'none'; object-src 'none'")


class SecurityHeaders:
    """Adds the Content-Security-Policy (unless the route set its own) and nosniff to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", CSP.encode()))
                if b"x-content-type-options" not in names:
                    headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def _error(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail}, headers=headers)


def _docs_page(base: str) -> HTMLResponse:
    """Swagger UI for the app's OpenAPI document, started by static/docs.js (no inline script)."""
    openapi = html.escape(f"{base}/openapi.json", quote=True)
    body = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>kafka-workflows API</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="stylesheet" href="{SWAGGER}/swagger-ui.css"></head>'
            f'<body><div id="swagger-ui" data-openapi="{openapi}"></div>'
            f'<script src="{SWAGGER}/swagger-ui-bundle.js"></script>'
            f'<script src="{html.escape(base, quote=True)}/ui/static/docs.js"></script></body></html>')
    return HTMLResponse(body, headers={"Content-Security-Policy": DOCS_CSP, "Cache-Control": "no-store"})


def _broker_unavailable(exc: KafkaException) -> JSONResponse:
    """503 naming librdkafka's error (its code and text, never record content)."""
    err = kafka_error(exc)
    return _error(503, f"the Kafka broker did not answer: {err.str() if err is not None else exc}")


def create_app() -> FastAPI:
    app = FastAPI(title="kafka-workflows operations API", version="1",
                  description="Workflows, consumer groups, lag, held partitions, dead letters, store requests and "
                              "the audit log of kafka-workflows; skip/unblock/pause/resume and replay. Every route "
                              "needs an Airflow login (bearer token or the UI session).",
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(routes.router)
    app.include_router(pages.router)

    @app.get("/openapi.json", dependencies=READ, include_in_schema=False)
    def openapi() -> dict[str, Any]:
        return app.openapi()

    @app.get("/docs", dependencies=READ, include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        return _docs_page(request.scope.get("root_path", ""))

    app.add_exception_handler(NotFound, lambda _r, e: _error(404, str(e)))  # type: ignore[arg-type,return-value]
    app.add_exception_handler(Conflict, lambda _r, e: _error(409, str(e)))  # type: ignore[arg-type,return-value]
    app.add_exception_handler(NoAnswer, lambda _r, e: _error(504, str(e)))  # type: ignore[arg-type,return-value]
    app.add_exception_handler(Unavailable, lambda _r, e: _error(503, str(e)))  # type: ignore[arg-type,return-value]
    # The broker did not answer a call in time (or refused it): the plugin's backend is unavailable, not
    # broken. The error names the call's failure (librdkafka's code and text), never record content.
    app.add_exception_handler(KafkaException, lambda _r, e: _broker_unavailable(e))  # type: ignore[arg-type,return-value]
    app.add_exception_handler(DeliveryError, lambda _r, e: _error(503, str(e)))  # type: ignore[arg-type,return-value]
    app.add_exception_handler(TooBusy, lambda _r, e: _error(  # type: ignore[arg-type,return-value]
        429, str(e), {"Retry-After": str(RETRY_AFTER)}))
    app.add_exception_handler(Invalid, lambda _r, e: _error(  # type: ignore[arg-type,return-value]
        422, [{"loc": ["body", e.field], "msg": str(e), "type": "value_error"}]))  # type: ignore[attr-defined]
    app.add_middleware(SecurityHeaders)
    return app
