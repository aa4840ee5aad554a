"""The FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from jobs_plugin.rest import errors
from jobs_plugin.rest.routes import events, jobs, runs, workflows
from jobs_plugin.rest.stream import EventHub
from jobs_plugin.settings import get_settings


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    hub = EventHub(get_settings().stream_poll_seconds)
    app.state.event_hub = hub
    await hub.start()
    try:
        yield
    finally:
        await hub.stop()


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
    for module in (jobs, runs, events, workflows):
        v1.include_router(module.router)
    app.include_router(v1)
    errors.install(app)
    return app
