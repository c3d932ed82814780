"""The nurse station page (interfaces.md, section 4): `GET /` and its static files.

No build step and no CDN: the page is plain HTML, CSS and JavaScript shipped in the package
(`api/static/`), because the gateway has no internet. The page holds no data: everything it
shows it reads from the API with the token the nurse typed, and the API is the only way it
changes anything. What the page must know of the rules (who may do what, which alarms only a
clinician clears, the A3 words, the signs, every alarm's priority, A8) is written into it here
from the one definition the service itself uses, so the page cannot drift from the service.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from api.auth import CLINICAL, NURSE_UP
from api.fanout import PING_S
from pumpctl.core.history import Sign
from pumpctl.core.machine import CLINICIAN_ONLY, PRIORITY, PUMP_ALARMS, Priority
from pumpctl.settings import Role
from pumpctl.words import A3_WORDS

__all__ = ["STATIC_DIR", "mount_page", "page_config"]

STATIC_DIR = Path(__file__).with_name("static")
_MARK = "<!--PUMPCTL_CONFIG-->"


def page_config() -> dict[str, object]:
    """The rules' facts the page needs, from the service's own definitions."""
    return {
        "api": "/api/v1",
        "readers": sorted(r.value for r in CLINICAL),
        "nurse_roles": sorted(r.value for r in NURSE_UP),
        "clinician_roles": [Role.CLINICIAN.value],
        "clinician_only_alarms": sorted(a.value for a in CLINICIAN_ONLY),
        # A8: every alarm kind's priority, highest first (the API serves it with each alarm too)
        "priorities": [p.value for p in Priority],
        "alarm_priorities": {kind: PRIORITY[kind].value for kind in sorted(PRIORITY)},
        "pump_alarms": list(PUMP_ALARMS),  # the pumps' own alarms (interfaces.md, section 2)
        "a3_words": A3_WORDS,
        "signs": [s.value for s in Sign],
        "events_ping_s": PING_S,
    }


@cache
def _index() -> str:
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    if _MARK not in html:
        raise RuntimeError(f"{STATIC_DIR / 'index.html'} lacks the {_MARK} marker")
    config = json.dumps(page_config()).replace("<", "\\u003c")
    tag = f'<script id="pumpctl-config" type="application/json">{config}</script>'
    return html.replace(_MARK, tag)


def mount_page(app: FastAPI) -> None:
    """Serve the page at `/` and its files at `/static/` (public: they hold no data)."""

    @app.get("/", include_in_schema=False, response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(
            _index(),
            headers={
                "Cache-Control": "no-cache",
                # the page loads nothing from elsewhere; no inline script runs
                "Content-Security-Policy": (
                    "default-src 'self'; script-src 'self'; style-src 'self'; "
                    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
                ),
                "X-Content-Type-Options": "nosniff",
            },
        )

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
