"""The gateway's own servers fail under the real service (issue 19's fault campaign): the MQTT
broker killed and restarted, the PostgreSQL database slow, and the PostgreSQL server killed and
started again.

Each fault is injected into running processes: `pumpctl serve` (the kernel and its web side, as
`tests/helpers/service_process.py` starts it, on the real clock), its pump simulated by
`pumpctl simulate mqtt|serial` in a process of its own (so the pump goes on doing what it was
last told while the gateway cannot reach it, as a real one does, and its control interface says
what it really did), a Mosquitto and a PostgreSQL server of the test's own on free ports.

What the user is promised (docs/clinical-rules.md A2, A3, I1; docs/interfaces.md "The store
degraded"; docs/architecture.md "Storage never on a stop's path"):

- The broker gone: no valid status for longer than the link timeout is communication loss
  (A2), on /health (the pump not connected; a lost pump link is not a 503), on the infusion's
  view and in the log. A nurse's reaction press is answered at once, within the stop bound, as
  unconfirmed (202, A3: "Pump did not stop: clamp the line"), never a hang or a 500, and a
  resume is refused naming A3 while the stop is unconfirmed. When the broker is back, the kernel
  reads the pump's real state, never starts or speeds it up because the link came back (A2),
  sends the stop it owes (A3) until the pump confirms it, and the reaction is in the record.
- The database slow (every answer 500 ms late through a TCP proxy): the reaction stops the pump
  at once (I1), its answer's `recorded` says only what the kernel knows, /health says the store
  is degraded once a write took longer than its 1 s bound, and stays so until the records
  waiting are written within it (pumpctl/store/writer.py), and the records arrive, in order,
  even while it stays slow.
- The database server killed, then started again on the same data and port: /health is 503
  naming the store within its bound, the reaction still stops the pump with `recorded: false`,
  an action that must be recorded first (a resume, write-ahead) is refused 503 with nothing
  done, and once the server is back the store recovers (200) and writes what waited, in order;
  nothing acknowledged as recorded is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mosquitto_env import Broker
from needs import free_port
from postgres_env import (
    SERVER_USER,
    START_BOUND_S,
    PostgresServer,
    postgres_server,
    server_processes,
)
from pumpctl_process import PumpSimulator, mqtt_pumps, run_pumpctl, simulate_serial
from service_process import TOKENS, Service, serving
from tcp_proxy import SlowProxy
from test_store_faults import health, press, until_health, until_logged

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

#: The service's link timeout in these tests (A2; the default is 5 s).
LINK_TIMEOUT_S = 3.0
#: The service's stop bound (`stop_answer_s`, as tests/helpers/service_process.py sets it).
STOP_ANSWER_S = 2.0
#: What HTTP adds to a bound on a loaded 2-core CI machine.
SLACK_S = 1.0
#: The store's write bound (pumpctl/store/writer.py WRITE_BOUND_S): a write slower is degraded.
WRITE_BOUND_S = 1.0
#: How late the slow database answers, each time it answers.
DELAY_S = 0.5
#: Seconds a condition of the service or a pump has to come true (the MQTT bus and the
#: simulator reconnect with backoff capped at 5 s; the store's writer retries every 0.5 s).
BOUND_S = 30.0
A3_WORDS = "Pump did not stop: clamp the line"


# -- the pump, in a process of its own ---------------------------------------------------------


@asynccontextmanager
async def serial_pump() -> AsyncIterator[tuple[PumpSimulator, str]]:
    """`pumpctl simulate serial` (one New Era pump, address 0) in a process of its own, and
    the `--pump` URL the service reaches it by."""
    async with simulate_serial("--pumps", "1") as served:
        yield PumpSimulator(served.control_port, 0), f"serial://{served.path}?address=0"


async def db_upgrade(database: str) -> None:
    """`pumpctl db upgrade --database URL`: a gateway's store is migrated by its engineer."""
    done = await run_pumpctl("db", "upgrade", "--database", database)
    assert done.returncode == 0, done.stderr


# -- the slow database: a TCP proxy whose answers come late ------------------------------------


# -- the database server killed and started again ----------------------------------------------


def _gone(server: PostgresServer, killed: list[int]) -> bool:
    """The server's port refuses connections and none of `killed` is left, not even a zombie."""
    if any(Path(f"/proc/{pid}").exists() for pid in killed):
        return False
    with socket.socket() as probe:
        try:
            probe.connect(("127.0.0.1", server.port))
        except ConnectionRefusedError:
            return True
    return False


async def kill_server(server: PostgresServer) -> None:
    """SIGKILL every process of the server (a crash of the database host's server), and wait
    (bounded) until its port refuses connections and its processes are gone (reaped: a
    postmaster left a zombie would keep its successor from starting on the same data)."""
    killed = server_processes(server)
    for pid in killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    async with asyncio.timeout(BOUND_S):
        while not _gone(server, killed):  # noqa: ASYNC110 - nothing to await but time
            await asyncio.sleep(0.05)  # polling a condition with a deadline


def restart_server(server: PostgresServer) -> None:
    """Start the killed server again on its data directory and port (it recovers from its
    WAL), as postgres_env starts it, and wait (bounded by pg_ctl -w) until it accepts."""
    as_user = ["runuser", "-u", SERVER_USER, "--"] if os.geteuid() == 0 else []
    options = (
        f"-c listen_addresses=127.0.0.1 -p {server.port} -k {server.socket_dir} "
        "-c max_connections=50 -c fsync=off"
    )
    for tool, args in (
        ("pg_ctl", ["-D", str(server.data_dir), "-l", str(server.log_file), "-o", options,
                    "-w", "-t", str(START_BOUND_S), "start"]),
        ("pg_isready", ["-h", server.host, "-p", str(server.port), "-U", server.user,
                        "-t", str(START_BOUND_S)]),
    ):  # fmt: skip
        done = subprocess.run(
            [*as_user, str(server.bin_dir / tool), *args],
            capture_output=True, text=True, timeout=START_BOUND_S + 10, check=False,
            cwd=server.workdir,
        )  # fmt: skip
        assert done.returncode == 0, (tool, done.stderr, server.log_file.read_text()[-2000:])


# -- the service's side ------------------------------------------------------------------------


async def start_infusion(service: Service, mrn: str) -> int:
    """A patient's first infusion on `pump-1` (premedication an hour before, D3), started and
    seen running at 50 ml/h by the kernel (L1), on the real clock."""
    patient = await service.api(
        "POST", "/patients", "clinician", {"mrn": mrn, "weight_kg": 70}, 201
    )
    body = {"patient_id": patient["id"], "pump_id": "pump-1"}
    infusion = int((await service.api("POST", "/infusions", "clinician", body, 201))["id"])
    given = (await service.now()) - timedelta(minutes=60)
    await service.api(
        "POST", f"/infusions/{infusion}/premedication", "nurse", {"given_at": given.isoformat()}
    )
    await service.api("POST", f"/infusions/{infusion}/start", "clinician", {})
    await until_view(service, infusion, lambda v: v["state"] == "running" and v["rate_ml_h"] == 50)
    return infusion


async def view(service: Service, infusion: int) -> dict[str, Any]:
    view: dict[str, Any] = await service.api("GET", f"/infusions/{infusion}", "nurse")
    return view


async def until_view(
    service: Service, infusion: int, holds: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The infusion's view once `holds` is true of it, bounded."""
    async with asyncio.timeout(BOUND_S):
        while True:
            shown = await view(service, infusion)
            if holds(shown):
                return shown
            await asyncio.sleep(0.1)  # polling a condition with a deadline


async def events(service: Service, infusion: int) -> list[dict[str, Any]]:
    """The infusion's audit trail as the store holds it."""
    trail: list[dict[str, Any]] = await service.api("GET", f"/infusions/{infusion}/events", "nurse")
    return trail


async def until_events(
    service: Service, infusion: int, holds: Callable[[list[str]], bool]
) -> list[dict[str, Any]]:
    """The audit trail once `holds` is true of its types, bounded."""
    async with asyncio.timeout(BOUND_S):
        while True:
            trail = await events(service, infusion)
            if holds([e["type"] for e in trail]):
                return trail
            await asyncio.sleep(0.2)  # polling a condition with a deadline


async def react(service: Service, infusion: int) -> tuple[int, dict[str, Any], float]:
    """The nurse's reaction button (grade 2): the answer's status, body, and seconds taken."""
    assert service.http is not None
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    answer = await service.http.post(
        f"/api/v1/infusions/{infusion}/reactions",
        json={"grade": 2, "signs": ["other"]},
        headers={"Authorization": f"Bearer {TOKENS['nurse']}"},
        timeout=STOP_ANSWER_S + 10,
    )
    body: dict[str, Any] = answer.json()
    return answer.status_code, body, loop.time() - t0


async def changes_so_far(pump: PumpSimulator) -> int:
    """How many changes the pump has made (what it does next is its history from there)."""
    return len((await pump.report())["history"])


def assert_in_order(types: list[str], *expected: str) -> None:
    """`expected` occur in `types`, in that order (others between them)."""
    at = -1
    for kind in expected:
        assert kind in types[at + 1 :], (kind, expected, types)
        at = types.index(kind, at + 1)


# -- 1. the MQTT broker killed and restarted ---------------------------------------------------


@pytest.mark.mosquitto
async def test_a2_a3_broker_killed_comm_loss_press_unconfirmed_owed_stop_lands_on_return(
    broker: Broker, tmp_path: Path
) -> None:
    """A2, A3, I1: the broker SIGKILLed under a running infusion (an MQTT pump in a process of
    its own). Communication loss is raised within the link timeout and shown on /health, the
    infusion and the log; the reaction press is answered within the stop bound, 202 A3
    (unconfirmed: the pump never heard it, and it says so); resume is refused naming A3. The
    broker restarted on its port: the link comes back, the kernel reads the pump running,
    starts and speeds up nothing (A2), resends the owed stop (A3) and the pump confirms it; the
    reaction is in the record."""
    data = tmp_path / "service"
    data.mkdir()
    await db_upgrade(f"sqlite:///{(data / 'pumpctl.db').resolve()}")
    async with (
        mqtt_pumps(broker, tmp_path) as pump,
        serving(
            data,
            simulate=0,
            clock="real",
            env={"PUMPCTL_LINK_TIMEOUT_S": str(LINK_TIMEOUT_S)},
            args=["--pump", f"pump-1=mqtt://{broker.address}/pump-1"],
        ) as service,
    ):
        infusion = await start_infusion(service, "MRN-BROKER")
        running = await pump.until(lambda p: p["state"] == "running")
        assert running["rate_ml_h"] == 50, running

        loop = asyncio.get_running_loop()
        seen = len(running["history"])
        t_kill = loop.time()
        broker.stop()  # SIGKILL, as a crash would
        # A2: no valid status for longer than the link timeout is communication loss
        lost = await until_view(service, infusion, lambda v: "comm_loss" in v["latched_alarms"])
        seen_after_s = loop.time() - t_kill
        assert seen_after_s <= LINK_TIMEOUT_S + SLACK_S + 0.5, seen_after_s  # (watchdog: 0.5 s)
        assert lost["link_lost"] is True, lost
        assert any(a["kind"] == "comm_loss" and a["rule"] == "A2" for a in lost["alarms"]), lost
        code, said = await health(service)
        assert code == 200, said  # a lost pump link is reported, never a 503 of the service
        assert said["store"] == "up", said
        (shown_pump,) = [p for p in said["pumps"] if p["id"] == "pump-1"]
        assert shown_pump["connected"] is False, said
        assert shown_pump["last_contact_age_s"] > LINK_TIMEOUT_S, said  # how long unheard
        await until_logged(service, f"alarm pump=pump-1 infusion={infusion} kind=comm_loss rule=A2")

        # the press while the broker is down: answered at once, the stop unconfirmed (A3)
        code, answer, took_s = await react(service, infusion)
        assert code == 202, answer
        # at once: the link is known lost, so nothing waits out the stop bound (never a hang)
        assert took_s < STOP_ANSWER_S, took_s
        assert answer["stop"] == "unconfirmed", answer
        assert answer["alarm"] == "A3", answer
        assert answer["message"] == A3_WORDS, answer
        assert answer["state"] == "paused", answer  # I2: a grade 2 pauses the infusion
        # the 202 told the truth: the pump never heard the stop, and runs on
        still = await pump.report()
        assert still["state"] == "running", still
        assert still["rate_ml_h"] == 50, still
        assert still["history"][seen:] == [], still["history"]
        shown = await view(service, infusion)
        assert shown["stop_unconfirmed"] or shown["stop_pending"], shown
        # A3, I9: no resume while the stop of this interruption is unconfirmed
        refused = await service.api("POST", f"/infusions/{infusion}/resume", "nurse", None, 409)
        assert refused["detail"]["rule"] == "A3", refused

        broker.start()  # on the same port
        stopped = await pump.until(lambda p: p["state"] == "stopped")
        changes = stopped["history"][seen:]
        # A2: the link coming back started nothing and sped nothing up; A3: the owed stop landed
        assert [c["cause"] for c in changes if c["cause"] != "stop"] == [], changes
        assert all(c["rate_ml_h"] <= 50 for c in stopped["history"]), stopped["history"]
        assert changes[-1]["state"] == "stopped", changes
        back = await until_view(
            service,
            infusion,
            lambda v: not v["link_lost"] and not v["stop_unconfirmed"] and not v["stop_pending"],
        )
        assert back["state"] == "paused", back
        assert back["rate_ml_h"] == 0, back
        # A2: the communication-loss alarm stays latched for a nurse (escalation waits)
        assert "comm_loss" in back["latched_alarms"], back
        code, said = await health(service)
        assert code == 200, said
        assert [p["connected"] for p in said["pumps"] if p["id"] == "pump-1"] == [True], said

        # no record lost: the reaction, its unconfirmed stop, the link's return, the stop landed
        trail = await until_events(service, infusion, lambda t: "confirmed_stopped" in t)
        types = [e["type"] for e in trail]
        assert_in_order(types, "started", "alarm", "reaction", "paused", "link_restored")
        assert_in_order(types, "link_restored", "stop_resent", "confirmed_stopped")
        assert "resumed" not in types, types
        # A2: on its return the kernel read the pump's real state: running, at 50 ml/h
        restored = next(e for e in trail if e["type"] == "link_restored")
        assert restored["rule"] == "A2", restored
        assert restored["data"]["running"] is True, restored
        assert restored["data"]["rate_ml_h"] == 50, restored
        resent = next(e for e in trail if e["type"] == "stop_resent")
        assert resent["rule"] == "A3", resent
        reaction = next(e for e in trail if e["type"] == "reaction")
        assert reaction["actor"] == "nina", reaction
        code, said = await health(service)
        assert said["store_detail"]["records_lost"] == 0, said


# -- 2. the database slow ----------------------------------------------------------------------


@pytest.mark.postgres
async def test_i1_store_a_slow_database_never_delays_the_stop_and_every_record_arrives(
    tmp_path: Path,
) -> None:
    """I1 and the store's bound: PostgreSQL behind a proxy that answers 500 ms late. /health
    says the store is degraded (a write takes longer than 1 s); the reaction press stops the
    pump at once, confirmed within that 1 s that every write now exceeds; `recorded` claims no
    write the database cannot yet have acknowledged; the reaction and the pause reach the
    store, in order, while the database stays slow, and nothing is lost once it is quick
    again."""
    with postgres_server() as server:
        name = server.create_database()
        async with SlowProxy(port=free_port(), target=server.port) as proxy:
            url = f"postgresql://{server.user}@127.0.0.1:{proxy.port}/{name}"
            await db_upgrade(url)
            async with (
                serial_pump() as (pump, pump_url),
                serving(
                    tmp_path,
                    simulate=0,
                    clock="real",
                    args=["--pump", f"pump-1={pump_url}", "--database", url],
                ) as service,
            ):
                infusion = await start_infusion(service, "MRN-SLOW")
                await pump.until(lambda p: p["state"] == "running" and p["rate_ml_h"] == 50)
                before = [e["id"] for e in await events(service, infusion)]

                proxy.delay_s = DELAY_S
                # the store's bound: a write slower than 1 s is a degraded store, said at once
                said = await until_health(service, 503)
                assert said["store"] == "degraded", said
                assert "answer" in said["store_detail"]["reason"], said

                seen = await changes_so_far(pump)
                pressed_at = datetime.now(UTC)
                code, answer, took_s = await react(service, infusion)
                assert code == 201, answer
                assert answer["stop"] == "confirmed", answer  # I1: the stop did not wait
                # within the store's write bound, while any write (a record: several round
                # trips, seconds at this delay) takes longer: the stop waited for none of them
                assert answer["stop_confirmed_ms"] < WRITE_BOUND_S * 1000, answer
                assert took_s <= STOP_ANSWER_S, took_s
                if took_s < DELAY_S:  # no write can be acknowledged sooner than one answer
                    assert answer["recorded"] is False, answer
                if answer["recorded"] is False:
                    assert "not yet recorded" in answer["record_message"], answer
                else:
                    types = [e["type"] for e in await events(service, infusion)]
                    assert "reaction" in types, (answer, types)
                stopped = await pump.report()
                assert stopped["state"] == "stopped", stopped
                stop = [c for c in stopped["history"][seen:] if c["cause"] == "stop"]
                assert stop, stopped["history"]  # (the simulator's clinical clock is the real one)
                landed_s = (datetime.fromisoformat(stop[0]["at"]) - pressed_at).total_seconds()
                assert landed_s < WRITE_BOUND_S, landed_s  # at the pump, not after the disk

                # every record arrives while the database stays slow (still 500 ms), in order
                trail = await until_events(
                    service, infusion, lambda t: "reaction" in t and "paused" in t
                )
                assert [e["id"] for e in trail][: len(before)] == before
                assert_in_order([e["type"] for e in trail], "started", "reaction", "paused")

                proxy.delay_s = 0.0
                said = await until_health(service, 200)
                assert said["store_detail"]["records_lost"] == 0, said
                final = await events(service, infusion)
                assert [e["id"] for e in final][: len(trail)] == [e["id"] for e in trail]
                assert (await pump.report())["state"] == "stopped"
            await until_logged(service, "store DEGRADED")  # (the watch looks every 0.25 s)


# -- 3. the database server killed, then back --------------------------------------------------


@pytest.mark.postgres
async def test_i1_store_database_killed_stop_goes_on_resume_refused_records_written_on_return(
    tmp_path: Path,
) -> None:
    """I1, the store's degraded state and write-ahead: the PostgreSQL server SIGKILLed under
    the running service. /health is 503 naming the store within its bound; the reaction press
    stops the pump (201, `recorded: false`); a resume, which must be recorded before the pump
    runs, is refused 503 with nothing done. The server started again on its data and port:
    the store recovers (200), the records that waited are written in order after everything
    acknowledged before, and the resume is then done (I2: half rate)."""
    with postgres_server() as server:
        url = f"postgresql://{server.user}@127.0.0.1:{server.port}/{server.create_database()}"
        await db_upgrade(url)
        async with (
            serial_pump() as (pump, pump_url),
            serving(
                tmp_path,
                simulate=0,
                clock="real",
                args=["--pump", f"pump-1={pump_url}", "--database", url],
            ) as service,
        ):
            infusion = await start_infusion(service, "MRN-KILLED")
            await pump.until(lambda p: p["state"] == "running" and p["rate_ml_h"] == 50)
            before = [e["id"] for e in await events(service, infusion)]

            await kill_server(server)
            said = await until_health(service, 503)  # each answer within its bound
            assert said["store"] == "degraded", said
            assert said["status"] == "store degraded", said
            # the database's own words: its connection closed, or refused
            assert "connection" in said["store_detail"]["reason"].lower(), said

            seen = await changes_so_far(pump)
            answer = await press(service, infusion)  # 201
            assert answer["stop"] == "confirmed", answer  # I1: the stop did not wait
            assert answer["recorded"] is False, answer
            assert "not yet recorded" in answer["record_message"], answer
            stopped = await pump.report()
            assert stopped["state"] == "stopped", stopped
            assert [c["cause"] for c in stopped["history"][seen:]] == ["stop"], stopped["history"]

            # write-ahead: a resume must be recorded before the pump runs: refused, nothing done
            refused = await service.api("POST", f"/infusions/{infusion}/resume", "nurse", None, 503)
            assert refused["detail"]["store"] == "degraded", refused
            assert "resume is refused" in refused["detail"]["message"], refused
            still = await pump.report()
            assert still["state"] == "stopped", still
            assert len(still["history"]) == len(stopped["history"]), still["history"]
            shown = await service.pump("pump-1")
            assert shown["state"] == "stopped", shown
            code, said = await health(service)
            assert code == 503, said
            assert said["store_detail"]["records_waiting"] >= 1, said
            await until_logged(service, "store DEGRADED")

            await asyncio.to_thread(restart_server, server)
            said = await until_health(service, 200)  # every record that waited is written
            assert said["store_detail"]["records_lost"] == 0, said
            trail = await events(service, infusion)
            assert [e["id"] for e in trail][: len(before)] == before  # nothing acknowledged lost
            types = [e["type"] for e in trail]
            assert_in_order(types, "started", "reaction", "paused")
            assert "resumed" not in types, types  # the refused resume left nothing
            await until_logged(service, "store: the database answers again")

            # the store back, the same resume is done (I2: at half the rate of the reaction)
            await service.api("POST", f"/infusions/{infusion}/resume", "nurse", None)
            await until_view(service, infusion, lambda v: v["state"] == "running")
            running = await pump.until(lambda p: p["state"] == "running")
            assert running["rate_ml_h"] == 25, running
