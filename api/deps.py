"""The service's dependencies in one place: settings, the ward, the current user, role checks."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.auth import User, authenticate
from api.metrics import ServiceMetrics
from pumpctl.controller.ward import Ward
from pumpctl.settings import Role, Settings

__all__ = ["CurrentUser", "MetricsDep", "WardDep", "require"]

_bearer = HTTPBearer(auto_error=False, description="A token of the configured roles")


def get_settings(request: Request) -> Settings:
    """The settings the app was built from."""
    settings: Settings = request.app.state.settings
    return settings


def get_ward(request: Request) -> Ward:
    """The ward (controller and store) built in the app's lifespan."""
    ward: Ward = request.app.state.ward
    return ward


def get_metrics(request: Request) -> ServiceMetrics:
    """The app's Prometheus instruments (GET /metrics), built with the ward."""
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


def current_user(
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
    user = authenticate(get_settings(request).api_tokens, credentials.credentials)
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


def require(roles: Iterable[Role]) -> Callable[[User], User]:
    """A dependency admitting only `roles` (403 for the others)."""
    allowed = frozenset(roles)

    def check(user: CurrentUser) -> User:
        if user.role not in allowed:
            names = ", ".join(sorted(r.value for r in allowed))
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"role {user.role.value} may not do this ({names})"
            )
        return user

    return check
