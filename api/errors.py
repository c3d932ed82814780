"""How the ward's refusals become HTTP answers: 409 naming the rule, 422 naming the field (in
FastAPI's own shape, without the request's input), 404 for unknown ids."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from api.schemas import Message, ProblemOut, StoreDownOut
from pumpctl.controller.ward import Invalid, Refused
from pumpctl.store import NotFoundError
from pumpctl.store.writer import StoreUnavailable

__all__ = ["install_error_handlers", "responses"]

#: The error answers of interfaces.md section 3, as the OpenAPI declares them (FastAPI adds 422).
_RESPONSES: dict[int, dict[str, Any]] = {
    401: {"model": Message, "description": "No or bad token"},
    403: {"model": Message, "description": "The token's role may not do this"},
    404: {"model": Message, "description": "Unknown id"},
    409: {"model": ProblemOut, "description": "Refused by a rule: its id and its words"},
    503: {"model": StoreDownOut, "description": "The store does not answer: nothing was done"},
}


#: FastAPI's words when the body is not text its JSON parser takes (fastapi/routing.py).
_UNPARSABLE = "There was an error parsing the body"


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route or router answering `codes` besides its own."""
    return {code: _RESPONSES[code] for code in codes}


def _plain(value: Any) -> bool:
    """A JSON scalar any encoder takes: text, a boolean, null, an integer or a finite number."""
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int)


def _named(error: Mapping[str, Any]) -> dict[str, Any]:
    """One validation error as FastAPI answers it (`type`, `loc`, `msg`, `ctx`), without its
    `input` (a patient's MRN, free text, a NaN no JSON encoder takes) and without `ctx` values
    that are not plain JSON (an exception, a float that is not finite)."""
    loc = [part if isinstance(part, str | int) else str(part) for part in error["loc"]]
    named: dict[str, Any] = {"type": str(error["type"]), "loc": loc, "msg": str(error["msg"])}
    ctx = {str(k): v for k, v in (error.get("ctx") or {}).items() if _plain(v)}
    if ctx:
        named["ctx"] = ctx
    return named


def install_error_handlers(app: FastAPI) -> None:
    """Map Refused, Invalid and NotFoundError to 409, 422 and 404, a store that does not
    answer (StoreUnavailable) to 503 naming the store; a body FastAPI cannot
    parse (bytes that are not UTF-8 JSON text) to 422 naming the body, not an undeclared 400;
    a request the models refuse to 422 naming the fields, never echoing their values."""

    @app.exception_handler(RequestValidationError)
    async def not_valid(request: Request, exc: RequestValidationError) -> JSONResponse:
        del request
        return JSONResponse({"detail": [_named(e) for e in exc.errors()]}, 422)

    @app.exception_handler(HTTPException)
    async def unparsable(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 400 and exc.detail == _UNPARSABLE:
            loc = ["body"]
            msg = "the body is not JSON text (UTF-8)"
            return JSONResponse({"detail": [{"loc": loc, "msg": msg, "type": "json_invalid"}]}, 422)
        return await http_exception_handler(request, exc)

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

    @app.exception_handler(StoreUnavailable)
    async def store_down(request: Request, exc: StoreUnavailable) -> JSONResponse:
        del request
        return JSONResponse({"detail": {"store": "degraded", "message": str(exc)}}, 503)

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        del request
        return JSONResponse({"detail": str(exc)}, 404)
