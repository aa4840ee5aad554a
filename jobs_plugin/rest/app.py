"""The FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import APIRouter, FastAPI

from jobs_plugin.reconciler import Reconciler
from jobs_plugin.rest import errors
from jobs_plugin.rest.routes import (
    events,
    files,
    jobs,
    runs,
    sheets,
    webhooks,
    workbooks,
    workflows,
)
from jobs_plugin.rest.stream import EventHub
from jobs_plugin.settings import get_settings
from jobs_plugin.webhooks import Dispatcher


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    hub = EventHub(settings.stream_poll_seconds)
    app.state.event_hub = hub
    await hub.start()
    dispatcher = Dispatcher(settings).start() if settings.webhook_dispatch else None
    reconciler = (
        Reconciler(settings.reconcile_seconds).start() if settings.reconcile_seconds else None
    )
    try:
        yield
    finally:
        await hub.stop()
        if dispatcher is not None:
            await anyio.to_thread.run_sync(dispatcher.stop)
        if reconciler is not None:
            await anyio.to_thread.run_sync(reconciler.stop)


def create_app() -> FastAPI:
    """The REST API, every route under ``/v1``."""
    app = FastAPI(
        title="prefect-jobs",
        version="1",
        docs_url="/v1/docs",
        openapi_url="/v1/openapi.json",
        lifespan=_lifespan,
    )
    v1 = APIRouter(prefix="/v1")
    for module in (jobs, runs, events, workflows, webhooks, files, workbooks, sheets):
        v1.include_router(module.router)
    app.include_router(v1)
    _serve_docs_at_root(app)
    errors.install(app)
    return app


def _serve_docs_at_root(app: FastAPI) -> None:
    """The same OpenAPI document and docs at ``/openapi.json`` and ``/docs`` too, where
    generic tools (fuzzers, client generators) look first."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse, JSONResponse

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_json() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")
