"""The service's dependencies in one place: settings, the ward, the current user, role checks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.auth import Directory, User
from api.auth import identify as identify_token
from api.listing import InfusionList
from api.metrics import ServiceMetrics
from pumpctl.controller.ward import Ward
from pumpctl.settings import Role, Settings

__all__ = [
    "CurrentUser",
    "ListingDep",
    "MetricsDep",
    "WardDep",
    "bearer_token",
    "identify",
    "require",
]

_bearer = HTTPBearer(auto_error=False, description="A token of the configured roles")


# Every dependency here is `async def`: FastAPI runs a plain `def` dependency on a worker
# thread (anyio's pool, 40 at most), so on the nurse's press each would be a thread hop, and
# behind a flood of reads a wait for a free thread. These only read memory.


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_settings(request: Request) -> Settings:
    """The settings the app was built from."""
    return _settings(request)


async def get_ward(request: Request) -> Ward:
    """The ward (controller and store) built in the app's lifespan."""
    ward: Ward = request.app.state.ward
    return ward


async def get_listing(request: Request) -> InfusionList:
    """GET /infusions' list, kept in memory (api/listing.py), built with the ward."""
    listing: InfusionList = request.app.state.infusion_list
    return listing


async def get_metrics(request: Request) -> ServiceMetrics:
    """The app's Prometheus instruments (GET /metrics), built with the ward."""
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


def bearer_token(request: Request) -> str | None:
    """The bearer token a request carries (`Authorization: Bearer T`), or None."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def identify(request: Request) -> User | None:
    """Who the request's bearer token says it is, or None (`api.auth.identify`, with the
    kernel's accounts when it has them). Reads memory only: it may run before a body is read."""
    token = bearer_token(request)
    if token is None:
        return None
    directory: Directory | None = getattr(request.app.state, "accounts", None)
    return identify_token(_settings(request).api_tokens, directory, token)


async def current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    """The token's user; 401 without a valid bearer token."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    user = identify(request)
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "the token is not valid",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return user


CurrentUser = Annotated[User, Depends(current_user)]
WardDep = Annotated[Ward, Depends(get_ward)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
ListingDep = Annotated[InfusionList, Depends(get_listing)]


def require(roles: Iterable[Role]) -> Callable[[User], Awaitable[User]]:
    """A dependency admitting only `roles` (403 for the others)."""
    allowed = frozenset(roles)

    async def check(user: CurrentUser) -> User:
        if user.role not in allowed:
            names = ", ".join(sorted(r.value for r in allowed))
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"role {user.role.value} may not do this ({names})"
            )
        return user

    return check
