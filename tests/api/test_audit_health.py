"""The audit chain on the running service (`pumpctl serve` as a real process, on SQLite in its
data directory or on PostgreSQL; pumpctl/store/auditwatch.py): GET /health shows the last
verification; the forgery of issue 20 made while it runs is a loud line and `"audit trail
broken"` on /health, naming the row (200: the store works; docs/architecture.md says why); the
head it logs at start, at its interval and at stop disagrees with a chain rewritten whole
(`pumpctl audit verify --head`), and the running kernel sees such a rewrite itself."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from audit_forgery import audit_ids, delete_rows, forging, rechain, rewrite_reaction
from postgres_env import PostgresServer, postgres_server
from pumpctl_process import run_pumpctl
from service_process import Service, serving

pytestmark = pytest.mark.slow

#: The chain verified often and its head logged often, so the test sees them soon.
AUDIT_ENV = {
    "PUMPCTL_AUDIT_VERIFY_S": "0.3",
    "PUMPCTL_AUDIT_FULL_VERIFY_S": "1",
    "PUMPCTL_AUDIT_HEAD_LOG_S": "0.5",
}
HEAD_LINE = re.compile(r"audit chain head (none|\d+:[0-9a-f]{64})[^(]* \(([^);]+)")
BOUND_S = 20.0


def _url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'pumpctl.db'}"


async def _health(service: Service) -> tuple[int, dict[str, Any]]:
    assert service.http is not None
    answer = await service.http.get("/api/v1/health")
    return answer.status_code, answer.json()


async def _until(service: Service, holds: Any) -> tuple[int, dict[str, Any]]:
    async with asyncio.timeout(BOUND_S):
        while True:
            code, body = await _health(service)
            if holds(body):
                return code, body
            await asyncio.sleep(0.1)  # polling a condition with a deadline


async def _reaction(service: Service, grade: int) -> int:
    infusion = await service.running("pump-1", f"MRN-G{grade}")
    answer = await service.api(
        "POST",
        f"/infusions/{infusion}/reactions",
        "nurse",
        {"grade": grade, "signs": ["other"]},
        201,
    )
    assert answer["stop"] == "confirmed", answer
    return infusion


def _heads(log: str) -> list[tuple[str, str]]:
    return HEAD_LINE.findall(log)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The service's database: SQLite in its data directory, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield _url(tmp_path)
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name = server.create_database()
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)


async def test_health_shows_the_last_verification_and_a_forgery_made_while_it_runs(
    tmp_path: Path, database: str
) -> None:
    env = {**AUDIT_ENV, "PUMPCTL_DATABASE_URL": database}
    async with serving(tmp_path, env=env) as service:
        await _reaction(service, 3)
        (reaction_row,) = audit_ids(database, type="reaction")
        (paused_row,) = audit_ids(database, type="stopped_observation")
        last = audit_ids(database)[-1]
        code, body = await _until(
            service, lambda b: (b["audit"]["verified_through_id"] or 0) >= last
        )
        audit = body["audit"]
        assert (code, body["status"], audit["ok"]) == (200, "ok", True)
        assert re.fullmatch(r"[0-9a-f]{64}", audit["head"])
        assert audit["at"]
        assert audit["full_at"]
        assert (audit["row"], audit["problem"], audit["message"]) == (None, None, None)

        with forging(database) as db:  # while the service runs, as issue 20 did
            rewrite_reaction(db, reaction_row, actor="someone-else", grade=1)
            delete_rows(db, paused_row)

        code, body = await _until(service, lambda b: b["audit"]["ok"] is False)
        assert (code, body["status"], body["store"]) == (200, "audit trail broken", "up")
        assert (body["audit"]["row"], body["audit"]["problem"]) == (reaction_row, "content_changed")
        assert body["audit"]["message"].startswith("content changed")
        await service.api("GET", "/pumps", "viewer")  # the service goes on
    log = service.log.read_text()
    assert f"CRITICAL pumpctl.audit: audit trail BROKEN at row {reaction_row}: content" in log
    heads = _heads(log)
    assert heads[0] == ("none", "at start")  # a new store: its trail empty at start
    whens = [when for _, when in heads]
    assert "every 0.5 s" in whens
    assert whens[-1] == "at stop"


async def test_a_chain_rewritten_whole_disagrees_with_the_head_the_kernel_logged(
    tmp_path: Path,
) -> None:
    """The head of the kernel's last line (at stop) is the head it wrote; the chain rewritten
    whole afterwards, hashes recomputed, holds by itself and not against that head."""
    async with serving(tmp_path, env=AUDIT_ENV) as service:
        await _reaction(service, 3)
    (reaction_row,) = audit_ids(_url(tmp_path), type="reaction")
    logged, when = _heads(service.log.read_text())[-1]
    assert when == "at stop"
    head_id = int(logged.split(":")[0])
    assert head_id == audit_ids(_url(tmp_path))[-1]

    with forging(_url(tmp_path)) as db:
        rewrite_reaction(db, reaction_row, actor="someone-else", grade=1)
        rechain(db)

    alone = await run_pumpctl("audit", "verify", "--database", _url(tmp_path))
    assert alone.returncode == 0, alone.stderr
    against = await run_pumpctl("audit", "verify", "--database", _url(tmp_path), "--head", logged)
    assert against.returncode == 1
    assert against.stderr.startswith(f"pumpctl audit verify: row {head_id}: rewritten: "), (
        against.stderr
    )


async def test_the_running_kernel_sees_a_chain_rewritten_whole(tmp_path: Path) -> None:
    """The kernel remembers the row it verified last and the head it wrote: a rewrite of the
    whole chain while it runs is named at the row it verified last."""
    async with serving(tmp_path, env=AUDIT_ENV) as service:
        await _reaction(service, 2)
        last = audit_ids(_url(tmp_path))[-1]
        _, body = await _until(service, lambda b: (b["audit"]["verified_through_id"] or 0) >= last)
        verified_row = body["audit"]["verified_through_id"]
        (reaction_row,) = audit_ids(_url(tmp_path), type="reaction")
        with forging(_url(tmp_path)) as db:
            rewrite_reaction(db, reaction_row, actor="someone-else", grade=1)
            rechain(db)
        code, body = await _until(service, lambda b: b["audit"]["ok"] is False)
        assert code == 200
        assert body["audit"]["row"] >= verified_row
        assert body["audit"]["problem"] == "head_mismatch"
