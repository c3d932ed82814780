"""How the ward's refusals become HTTP answers: 409 naming the rule, 422 naming the field (in
FastAPI's own shape), 404 for unknown ids."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from pumpctl.controller.ward import Invalid, Refused
from pumpctl.store import NotFoundError

__all__ = ["install_error_handlers"]


def install_error_handlers(app: FastAPI) -> None:
    """Map Refused, Invalid and NotFoundError to 409, 422 and 404."""

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:
        del request
        return JSONResponse({"detail": {"rule": exc.rule, "message": exc.message}}, 409)

    @app.exception_handler(Invalid)
    async def invalid(request: Request, exc: Invalid) -> JSONResponse:
        del request
        loc = ["body", *exc.field.split(".")]
        body = {"detail": [{"loc": loc, "msg": exc.message, "type": "value_error"}]}
        return JSONResponse(body, 422)

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        del request
        return JSONResponse({"detail": str(exc)}, 404)
