"""The nurse station page over HTTPS in Debian's Chromium, which trusts the test CA as a
hospital workstation trusts its own: the CA in the browser user's NSS database
(tests/helpers/tls_env.py, `nss_home`), the service's chain and name verified by Chromium
itself (no `ignore_https_errors`, no certificate-error flag). A nurse signs in, the room shows,
the page's API calls and its live events run over the same HTTPS origin, every response
carries HSTS. The same browser without the CA refuses the service (the trust is the CA's).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from page_env import chromium_binary, signed_in
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page, Response, async_playwright, expect
from service_process import Service, serving
from tls_env import Pki, make_pki, nss_home

HSTS = "max-age=31536000"
#: On the module's loop, as every page module (the page modules' leaked-task check runs there:
#: tests/page/conftest.py).
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest_asyncio.fixture(loop_scope="module")
async def https_service(tmp_path: Path, pki: Pki) -> AsyncIterator[Service]:
    data = tmp_path / "data"
    data.mkdir()
    env = {"PUMPCTL_TLS_CERTIFICATE": str(pki.server_cert), "PUMPCTL_TLS_KEY": str(pki.server_key)}
    async with serving(data, env=env, scheme="https", verify=pki.client_context()) as served:
        yield served


async def test_the_page_runs_over_https_in_chromium_trusting_the_test_ca(
    tmp_path: Path, pki: Pki, https_service: Service
) -> None:
    home = nss_home(tmp_path / "home", pki.ca_file)
    executable = chromium_binary()
    responses: list[Response] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=executable, env={**os.environ, "HOME": str(home)}
        )
        try:

            def keep(response: Response) -> None:
                responses.append(response)

            async def watch(page: Page) -> None:
                page.on("response", keep)

            page = await signed_in(browser, https_service, "nurse", prepare=watch)
            assert page.url.startswith(f"https://127.0.0.1:{https_service.port}/")
            assert await page.evaluate("window.isSecureContext") is True
            await expect(page.locator("#overview .tile")).to_have_count(2)
            api_calls = [r for r in responses if "/api/v1/" in r.url]
            assert api_calls, [r.url for r in responses]
            for response in responses:
                assert response.url.startswith("https://"), response.url
                headers = await response.all_headers()
                assert headers.get("strict-transport-security") == HSTS, response.url
            security = await responses[0].security_details()
            assert security is not None
            assert security["protocol"] in {"TLS 1.2", "TLS 1.3"}
            assert page.errors == []  # type: ignore[attr-defined]
        finally:
            await browser.close()


async def test_without_the_ca_chromium_refuses_the_service(
    tmp_path: Path, https_service: Service
) -> None:
    """The control: the same browser, a home without the CA; the trust above was the CA's."""
    home = tmp_path / "bare-home"
    home.mkdir()
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=chromium_binary(), env={**os.environ, "HOME": str(home)}
        )
        try:
            page = await browser.new_page()
            with pytest.raises(PlaywrightError, match="ERR_CERT_AUTHORITY_INVALID"):
                await page.goto(https_service.url + "/")
        finally:
            await browser.close()
