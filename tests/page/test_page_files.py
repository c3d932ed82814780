"""The page as files (interfaces.md, section 4): served at `/` with no data in it, nothing
loaded from elsewhere (the gateway is offline), and the rules' facts written in from the
service's own definitions."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from api.page import STATIC_DIR
from pumpctl.controller.ward import A3_WORDS
from pumpctl.core.machine import CLINICIAN_ONLY
from pumpctl.settings import Settings, parse_tokens

SVG_NS = "http://www.w3.org/2000/svg"


def test_the_page_and_its_files_are_public_and_load_nothing_from_elsewhere(
    tmp_path: Path,
) -> None:
    settings = Settings(
        database=f"sqlite:///{tmp_path / 'pumpctl.db'}",
        clock="virtual",
        simulate=1,
        api_tokens=parse_tokens("n-tok-for-the-tests-only-32chars=nina:nurse"),
    )
    with TestClient(create_app(settings), base_url="http://gateway") as client:
        index = client.get("/")
        assert index.status_code == 200
        assert "default-src 'self'" in index.headers["content-security-policy"]
        config = re.search(
            r'<script id="pumpctl-config" type="application/json">(.*?)</script>', index.text
        )
        assert config is not None
        facts = json.loads(config.group(1))
        assert facts["a3_words"] == A3_WORDS
        assert set(facts["clinician_only_alarms"]) == {a.value for a in CLINICIAN_ONLY}
        assert (
            "n-tok-for-the-tests-only-32chars" not in index.text
        )  # the page holds no token and no data
        assert set(facts["alarm_priorities"]) >= {"pump_not_stopped", "occlusion"}  # A8
        modules = [p.name for p in STATIC_DIR.glob("*.js")]
        assert len(modules) > 1  # the page in ES modules (issue 23)
        for name in ("page.css", *modules):
            served = client.get(f"/static/{name}")
            assert served.status_code == 200
            assert served.text == (STATIC_DIR / name).read_text(encoding="utf-8")
    for file in STATIC_DIR.iterdir():
        text = file.read_text(encoding="utf-8").replace(SVG_NS, "")
        assert not re.search(r"https?://|//cdn|@import", text), f"{file.name} loads from elsewhere"
