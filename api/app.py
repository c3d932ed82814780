"""`create_app(settings)`: the kernel's API. Nothing is built at import: the store, the
pumps (real drivers, or simulated ones), the controller and the ward are opened in the app's
lifespan from the settings by the kernel's composition root (`api.gateway.open_kernel`), and
closed in reverse order when it ends.

On start the service takes back every infusion the store still supervises (A4, `recover`)
before it answers a request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import get_ward, require
from api.errors import install_error_handlers
from api.gateway import open_kernel
from api.guard import API, IdentityFirst
from api.page import mount_page
from api.routes import events, infusions, patients, session, system
from pumpctl.settings import Role, Settings

__all__ = ["API_PREFIX", "create_app"]

API_PREFIX = API


def create_app(settings: Settings) -> FastAPI:
    """The service for `settings` (built when it starts, in its lifespan)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await open_kernel(app, settings, stack)
            yield

    app = FastAPI(
        title="pumpctl",
        version="0.1.0",
        summary="Infusion-pump supervision: the daratumumab rate ladder and IRR rules",
        lifespan=lifespan,
        # the web side serves /docs from the package; the kernel serves no page that loads
        # from elsewhere (FastAPI's own pages load Swagger UI and ReDoc from a CDN)
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.add_middleware(IdentityFirst, tokens=settings.api_tokens)  # 401, 413 before the body
    install_error_handlers(app)
    api = APIRouter(prefix=API_PREFIX)
    api.include_router(system.router)
    api.include_router(session.router)
    api.include_router(patients.router)
    api.include_router(infusions.router)
    api.include_router(events.router)
    if settings.simulate:
        from api.sim import routes as sim_routes  # noqa: PLC0415 - only when simulating

        api.include_router(sim_routes.router)
    app.include_router(api)
    app.include_router(events.internal)
    app.include_router(session.internal)

    admin = [Depends(require({Role.ADMIN})), Depends(get_ward)]

    @app.get("/metrics", include_in_schema=False, dependencies=admin)
    async def metrics() -> Response:
        await app.state.metrics.refresh()
        registry = app.state.metrics.registry
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    mount_page(app)  # the nurse station page at /
    return app
