"""The page from `pumpctl demo`, as a newcomer meets it: the demo's first line is the page's
URL, a token it printed signs in, and pump-1 climbs the ladder in the browser."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest
from page_env import free_port
from playwright.async_api import Browser, expect

pytestmark = [pytest.mark.timeout(180), pytest.mark.asyncio(loop_scope="module")]
LINES_WITHIN_S = 60.0


async def test_the_demo_prints_the_page_first_and_a_nurse_sees_pump_1_infusing(
    browser: Browser, tmp_path: Path
) -> None:
    env = {**os.environ, "PUMPCTL_DATA_DIR": str(tmp_path)}
    demo = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pumpctl", "demo", "--port", str(free_port()), "--speed", "600",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env,
    )  # fmt: skip
    assert demo.stdout is not None
    try:
        lines: list[str] = []
        async with asyncio.timeout(LINES_WITHIN_S):
            while not any("started on pump-1" in line for line in lines):
                line = (await demo.stdout.readline()).decode()
                assert line, f"the demo ended early: {lines}"
                lines.append(line.rstrip())
        first = re.fullmatch(
            r"pumpctl demo: the nurse station page is at (http://\S+/) .*", lines[0]
        )
        assert first is not None, lines[0]
        token = next(line.split()[1] for line in lines if line.strip().startswith("nurse "))

        page = await browser.new_page()
        await page.goto(first.group(1))
        await page.get_by_label("Access token").fill(token)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator('#overview .tile[data-pump="pump-1"]')).to_contain_text("Running")
        await page.locator('#overview .tile[data-pump="pump-1"]').click()  # its detail
        pump = page.get_by_role("region", name="pump-1", exact=True)
        await expect(pump).to_contain_text("Running")
        await expect(pump.get_by_role("button", name="Report reaction")).to_be_visible()
        # 600x: a step every 6 s of wall time; the page follows without a reload
        await expect(pump).to_contain_text(re.compile(r"(100|150|200) ml/h, pump running"))
    finally:
        if demo.returncode is None:
            demo.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            await demo.communicate()
