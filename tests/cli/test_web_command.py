"""`pumpctl web --config FILE` (the web side's own systemd unit) reads the web side's settings
alone: the kernel's in the same file (its database, its pumps, an MQTT password file the web
side's user may not read) are neither read nor checked, so the web unit starts where the
kernel's settings are kept from it. The kernel (`pumpctl serve`) still refuses them."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
from needs import free_port
from pumpctl_process import PUMPCTL, run_pumpctl, terminate

BOUND_S = 30.0


def _config(tmp_path: Path, port: int) -> Path:
    config = tmp_path / "pumpctl.toml"
    config.write_text(
        f"port = {port}\n"
        'database = "postgresql://pumpctl:secret@db.example/pumpctl"\n'
        f'mqtt_password_file = "{tmp_path}/not-readable-here.pass"\n'
        'api_tokens = "n-tok-for-the-tests-only-32chars=nina:nurse"\n'
        "[[pumps]]\n"
        'id = "pump-1"\ntransport = "mqtt"\nhost = "127.0.0.1"\npump = "pump-1"\n'
    )
    return config


async def test_the_web_side_starts_on_a_config_whose_kernel_settings_it_cannot_read(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = _config(tmp_path, port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPCTL_")}
    process = await asyncio.create_subprocess_exec(
        *PUMPCTL, "web", "--config", str(config), "--kernel-socket", str(tmp_path / "k.sock"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(timeout=5.0) as http, asyncio.timeout(BOUND_S):
            while True:
                assert process.returncode is None, "the web side refused its config"
                try:
                    answer = await http.get(f"http://127.0.0.1:{port}/api/v1/health")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)  # polling a condition with a deadline
        assert answer.status_code == 503  # up, and saying its kernel is not there
        assert answer.json()["detail"]["kernel"] == "unreachable"
    finally:
        await terminate(process)
    refused = await run_pumpctl("serve", "--config", str(config))
    assert refused.returncode == 2
    assert "mqtt_password_file" in refused.stderr
