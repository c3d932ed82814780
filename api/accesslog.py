"""uvicorn's access log without request input (docs/security.md, "Input").

uvicorn writes one line per answer: the peer, the method, the path with its query string, the
status. A query string carries what a client typed (`?mrn=...` would be a patient's number in
the journal), and so can a path (`/api/v1/patients/MRN-4711`, a 404 all the same). `QuietAccess`
rewrites each line's arguments before it is formatted: the query string is left out, a path
segment is printed only if it is a number (a row id) or a word of the service's own routes and
files, any other segment as `*`, and a method outside HTTP's own as `*`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from fastapi import APIRouter

__all__ = [
    "KERNEL_ROUTE_WORDS",
    "QuietAccess",
    "kernel_route_words",
    "quiet_access_log",
    "route_words",
]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: uvicorn's access line: (peer, method, path with query, HTTP version, status).
_ARGS = 5


def _words_of(paths: Iterable[str]) -> set[str]:
    return {s for path in paths for s in path.split("/") if s and "{" not in s}


#: The literal segments of the kernel's API routes (api/routes' system, patients, infusions,
#: events; api/sim's), named here so that the web side knows them without importing the
#: kernel's routes, and with them its stack (docs/architecture.md, "Two processes");
#: tests/test_layers.py holds them equal to `kernel_route_words()`, read from the routes.
KERNEL_ROUTE_WORDS = frozenset(
    {
        "acknowledge",
        "advance",
        "alarms",
        "bag",
        "cancel",
        "clear",
        "clock",
        "events",
        "faults",
        "health",
        "history",
        "hold",
        "infusions",
        "me",
        "patients",
        "premedication",
        "pumps",
        "reactions",
        "reassess",
        "reinstate",
        "release",
        "resolve",
        "resume",
        "sim",
        "start",
        "stop",
    }
)


def kernel_route_words() -> frozenset[str]:
    """The literal segments of the kernel's API routes, read from its routers (imports the
    kernel's routes and its stack: the kernel's side and the tests only)."""
    from api.routes import events, infusions, patients, system  # noqa: PLC0415 - kernel only
    from api.sim import routes as sim  # noqa: PLC0415

    routers: list[APIRouter] = [
        system.router,
        patients.router,
        infusions.router,
        events.router,
        sim.router,
    ]
    paths = [getattr(r, "path", "") for router in routers for r in router.routes]
    prefixes = [str(router.prefix) for router in routers]
    return frozenset(_words_of([*paths, *prefixes]))


@cache
def route_words(*directories: Path) -> frozenset[str]:
    """The literal segments of every route of the kernel's API (`KERNEL_ROUTE_WORDS`) and the
    web side's own paths, and the names of the files under `directories` (the page's, Swagger
    UI's)."""
    words = KERNEL_ROUTE_WORDS | _words_of(["/api/v1", "/metrics", "/docs", "/openapi.json"])
    words |= {"static", "docs-static", "favicon.ico"}
    for directory in directories:
        words |= {f.name for f in directory.rglob("*") if f.is_file()}
    return frozenset(words)


class QuietAccess(logging.Filter):
    """Rewrites uvicorn's access lines (module docstring); every line passes."""

    def __init__(self, words: frozenset[str]) -> None:
        super().__init__()
        self.words = words

    def shape(self, path: str) -> str:
        """`path` without its query, each segment a number, a known word or `*`."""
        path = path.split("?", 1)[0]
        kept = [
            s if not s or (s.isascii() and s.isdigit()) or s in self.words else "*"
            for s in path.split("/")
        ]
        return "/".join(kept)

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == _ARGS:
            peer, method, path, version, status = args
            method = method if method in _METHODS else "*"
            record.args = (peer, method, self.shape(str(path)), version, status)
        return True


def quiet_access_log(words: frozenset[str]) -> QuietAccess:
    """Put a `QuietAccess` on uvicorn's access logger (once: one put before is replaced)."""
    access = logging.getLogger("uvicorn.access")
    for old in [f for f in access.filters if isinstance(f, QuietAccess)]:
        access.removeFilter(old)
    quiet = QuietAccess(words)
    access.addFilter(quiet)
    return quiet
