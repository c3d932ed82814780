"""`pumpctl serve` refuses to start, as a real process, when it must: no API tokens, a scaled or
virtual clock against real pump links without --bench, a pump URL it cannot read. Each refusal
is one line on stderr naming what is wrong, exit code 2, no traceback, and nothing served."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
from pumpctl_process import BOUND_S, PUMPCTL

TOKENS = "a-tok=ada:admin,c-tok=carl:clinician"


async def _serve(
    cwd: Path, *args: str, tokens: str | None = TOKENS
) -> subprocess.CompletedProcess[str]:
    """`pumpctl serve ARGS` in `cwd` with no PUMPCTL_* from the caller's environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPCTL_")}
    env["PUMPCTL_DATA_DIR"] = str(cwd / "data")
    if tokens is not None:
        env["PUMPCTL_API_TOKENS"] = tokens
    process = await asyncio.create_subprocess_exec(
        *PUMPCTL, "serve", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=cwd, env=env,
    )  # fmt: skip
    async with asyncio.timeout(BOUND_S):
        out, err = await process.communicate()
    assert process.returncode is not None
    return subprocess.CompletedProcess(list(args), process.returncode, out.decode(), err.decode())


def _refused(done: subprocess.CompletedProcess[str]) -> str:
    """The one line of a refusal (exit 2, no traceback, never started serving)."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert "Uvicorn running" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("pumpctl serve: "), lines
    return lines[0]


async def test_serve_without_tokens_refuses_and_says_how_to_give_them(tmp_path: Path) -> None:
    line = _refused(await _serve(tmp_path, "--simulate", "1", "--clock", "virtual", tokens=None))
    assert "no API tokens" in line
    assert "PUMPCTL_API_TOKENS" in line


async def test_serve_with_an_empty_token_list_refuses_too(tmp_path: Path) -> None:
    line = _refused(await _serve(tmp_path, "--simulate", "1", tokens=""))
    assert "no API tokens" in line


@pytest.mark.parametrize("clock", ["virtual", "scaled:60"])
async def test_a_virtual_or_scaled_clock_with_a_real_pump_and_no_bench_refuses(
    tmp_path: Path, clock: str
) -> None:
    line = _refused(
        await _serve(tmp_path, "--clock", clock, "--pump", "pump-1=serial:///dev/ttyUSB0")
    )
    assert f"clock: {clock!r} with real pump links is refused" in line
    assert "--bench" in line


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("pump-1=http://gateway/pump", "pump pump-1: URL must start serial:// or mqtt://"),
        ("pump-1=serial://", "pump pump-1: serial URL names no port"),
        ("pump-1=serial:///dev/ttyUSB0?adress=1", "pump pump-1: unknown serial option(s)"),
        ("pump-1=mqtt://", "pump pump-1: MQTT URL names no broker"),
    ],
)
async def test_a_bad_pump_url_is_refused_naming_the_pump_and_what_is_wrong(
    tmp_path: Path, url: str, words: str
) -> None:
    line = _refused(await _serve(tmp_path, "--pump", url))
    assert words in line, line


async def test_a_pump_without_an_id_is_refused_naming_what_was_given(tmp_path: Path) -> None:
    line = _refused(await _serve(tmp_path, "--pump", "serial:///dev/ttyUSB0"))
    assert "--pump 'serial:///dev/ttyUSB0': give ID=URL" in line, line


async def test_a_pump_given_twice_is_refused(tmp_path: Path) -> None:
    twice = ["--pump", "pump-1=serial:///dev/ttyUSB0", "--pump", "pump-1=serial:///dev/ttyUSB1"]
    line = _refused(await _serve(tmp_path, *twice))
    assert "configured twice" in line


async def test_a_pump_that_cannot_be_opened_ends_the_start_in_one_line_naming_it(
    tmp_path: Path,
) -> None:
    """No traceback, no "Task exception was never retrieved": the last line names the port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPCTL_")}
    upgrade = await asyncio.create_subprocess_exec(
        *PUMPCTL, "db", "upgrade",
        env={**env, "PUMPCTL_DATA_DIR": str(tmp_path / "data")},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(BOUND_S):
        _, upgrade_err = await upgrade.communicate()
    assert upgrade.returncode == 0, upgrade_err
    missing = tmp_path / "no-such-tty"
    done = await _serve(
        tmp_path, "--bench", "--clock", "virtual", "--pump", f"bed-1=serial://{missing}"
    )
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert "never retrieved" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("pumpctl serve: a pump could not be opened: "), last
    assert str(missing) in last


async def test_a_store_not_migrated_ends_the_start_in_one_line_saying_what_to_run(
    tmp_path: Path,
) -> None:
    done = await _serve(tmp_path, "--bench", "--clock", "virtual", "--pump", "b=serial:///dev/x")
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("pumpctl serve: database "), last
    assert "run `pumpctl db upgrade`" in last
