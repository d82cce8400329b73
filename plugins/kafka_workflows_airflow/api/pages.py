"""Server-rendered pages shown in Airflow's UI through `external_views` (iframes, same origin).

Each page is one small HTML shell naming its kind and subject; `static/kw.js` fills it from the
JSON API with the session cookie the Airflow UI already holds, and follows the UI's light/dark
theme (the parent page's `dark` class). Same auth as the API: read access to the DAG. A page holds
no inline script or style (the app's Content-Security-Policy forbids both); its subject travels as
an HTML-escaped JSON attribute that kw.js reads as data.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from kafka_workflows_airflow.api.deps import READ

STATIC = Path(__file__).with_name("static")
ASSETS = {"kw.js": "text/javascript", "kw.css": "text/css", "docs.js": "text/javascript"}
router = APIRouter(prefix="/ui", include_in_schema=False, dependencies=READ)


def _page(request: Request, kind: str, title: str, **subject: str) -> HTMLResponse:
    base = request.scope.get("root_path", "")
    data = html.escape(json.dumps({"page": kind, "base": base, **subject}), quote=True)
    body = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="stylesheet" href="{base}/ui/static/kw.css"></head>'
            f'<body><main id="kw" data-kw="{data}"><p class="muted">Loading…</p></main>'
            f'<dialog id="kw-dialog"></dialog><script src="{base}/ui/static/kw.js"></script></body></html>')
    return HTMLResponse(body, headers={"Cache-Control": "no-store"})


@router.get("/")
def overview(request: Request) -> HTMLResponse:
    return _page(request, "overview", "Kafka workflows")


@router.get("/workflows/{dag_id}")
def workflow(request: Request, dag_id: str) -> HTMLResponse:
    return _page(request, "workflow", f"{dag_id}: Kafka", dag_id=dag_id)


@router.get("/workflows/{dag_id}/groups/{group}")
def group(request: Request, dag_id: str, group: str) -> HTMLResponse:
    return _page(request, "group", f"{group}: partitions", dag_id=dag_id, group=group)


@router.get("/workflows/{dag_id}/dead-letters")
def dead_letters(request: Request, dag_id: str) -> HTMLResponse:
    return _page(request, "dead-letters", f"{dag_id}: dead letters", dag_id=dag_id)


@router.get("/workflows/{dag_id}/runs/{run_id}")
def run(request: Request, dag_id: str, run_id: str) -> HTMLResponse:
    return _page(request, "run", f"{dag_id}: run progress", dag_id=dag_id, run_id=run_id)


@router.get("/static/{name}")
def asset(name: str) -> Response:
    if name not in ASSETS:
        return Response(status_code=404)
    return Response((STATIC / name).read_bytes(), media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})
