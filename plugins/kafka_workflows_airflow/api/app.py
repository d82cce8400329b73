"""The FastAPI app the plugin mounts under /kafka-workflows: API, pages, and its own OpenAPI docs.

The docs and the OpenAPI document are served behind authentication like every other route, so
the app has no public route (tests walk `app.routes` to check that). Errors of the core become
HTTP answers that name what is wrong: unknown name -> 404, bad field -> 422 (the shape of
FastAPI's own validation errors), stale view -> 409, no worker answered -> 504.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from kafka_workflows.monitor.service import Conflict, Invalid, NoAnswer, NotFound
from kafka_workflows_airflow.api import pages, routes
from kafka_workflows_airflow.api.deps import READ


def _error(status: int, detail: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail})


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
        return get_swagger_ui_html(openapi_url=f"{request.scope.get('root_path', '')}/openapi.json",
                                   title="kafka-workflows API")

    app.add_exception_handler(NotFound, lambda _r, e: _error(404, str(e)))  # type: ignore[arg-type,return-value]
    app.add_exception_handler(Conflict, lambda _r, e: _error(409, str(e)))  # type: ignore[arg-type,return-value]
    app.add_exception_handler(NoAnswer, lambda _r, e: _error(504, str(e)))  # type: ignore[arg-type,return-value]
    app.add_exception_handler(Invalid, lambda _r, e: _error(  # type: ignore[arg-type,return-value]
        422, [{"loc": ["body", e.field], "msg": str(e), "type": "value_error"}]))  # type: ignore[attr-defined]
    return app
