"""Personal accounts through the kernel's API (issue 20; interfaces.md, section 3, `POST` and
`DELETE /session`): a person signs in with her own name and password and the audit names her;
failures slow down and lock out per name and per address (429 with `Retry-After`, nothing
checked then); disable, a new password and a revoked machine token take effect without a
restart; the sign-in's input is 422 naming the field, never echoed. Sign-ins, sign-outs,
refusals and lock-outs are audited by the account's name (never the name typed for no
account), through the store's writer: a degraded store neither refuses nor delays a sign-in,
its row waits and is written when the database answers, and the rows that may wait are
bounded (past the bound one is lost and counted, as a record past the backlog is).

The accounts are written as `pumpctl user` writes them (pumpctl/store/accounts.py) into the
app's own database; the kernel's snapshot is read again at once (`refresh`, what its 2 s loop
does) instead of waiting for the loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import AUTH, ApiSteps
from conftest import settings as app_settings
from fastapi.testclient import TestClient

from api.accounts import AccountDirectory, AccountTrail
from api.app import create_app
from pumpctl.clock import VirtualClock
from pumpctl.credentials import SessionSeal, hash_password, new_token, token_digest
from pumpctl.store import AccountAudit, Store, migrate
from pumpctl.store.accounts import AccountBook
from pumpctl.store.chain import verify
from pumpctl.store.engine import make_engine
from pumpctl.store.models import Audit
from pumpctl.store.writer import StoreWriter

PASSWORD = "a long enough pass phrase"  # noqa: S105 - the tests' account
REFUSED = "the name or the password is not right"
#: Seconds within which the store's writer has written what the kernel queued (its thread
#: writes after the answer; a loaded machine).
WRITTEN_WITHIN_S = 10.0


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings(tmp_path)), base_url="http://gateway") as c:
        yield c


@pytest.fixture
def book(tmp_path: Path) -> Iterator[AccountBook]:
    engine = make_engine(f"sqlite:///{tmp_path / 'pumpctl.db'}")
    try:
        yield AccountBook(engine)
    finally:
        engine.dispose()


def directory(client: TestClient) -> AccountDirectory:
    found: AccountDirectory = client.app.state.accounts  # type: ignore[attr-defined]
    return found


def seen(client: TestClient) -> None:
    """The kernel reads the accounts again now (its loop does every 2 s)."""
    assert client.portal is not None
    assert client.portal.call(directory(client).refresh)


def sign_in(client: TestClient, name: str, password: str = PASSWORD) -> tuple[int, dict]:  # type: ignore[type-arg]
    r = client.post("/api/v1/session", json={"name": name, "password": password})
    return r.status_code, {**r.json(), "retry-after": r.headers.get("retry-after")}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def account_rows(tmp_path: Path, count: int) -> list[Audit]:
    """The accounts' audit rows once there are `count` (the writer's thread writes them after
    the answers), bounded."""
    kinds = {kind.value for kind in AccountAudit}
    engine = make_engine(f"sqlite:///{tmp_path / 'pumpctl.db'}")
    try:
        deadline = time.monotonic() + WRITTEN_WITHIN_S
        while True:
            found = [r for r in Store(engine).audit_since(0, 10_000) if r.type in kinds]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)  # polling a condition with a deadline
    finally:
        engine.dispose()


def said(rows: list[Audit]) -> list[tuple[str, str | None, dict[str, object]]]:
    return [(r.type, r.actor, r.data) for r in rows]


def test_a_person_signs_in_acts_and_the_audit_names_her(
    client: TestClient, book: AccountBook
) -> None:
    book.add("nina.k", "nurse", hash_password(PASSWORD))
    seen(client)
    status, session = sign_in(client, "Nina.K")  # the name in any case
    assert status == 201, session
    assert (session["name"], session["role"]) == ("nina.k", "nurse")
    ends = datetime.fromisoformat(session["expires_at"])
    assert abs(ends - (datetime.now(UTC) + timedelta(hours=12))) < timedelta(minutes=1)
    me = client.get("/api/v1/me", headers=bearer(session["token"])).json()
    assert me == {"name": "nina.k", "role": "nurse"}
    ward = ApiSteps(client)
    infusion = ward.started(ward.patient())
    r = client.post(
        f"/api/v1/infusions/{infusion}/reactions",
        json={"grade": 2, "signs": ["other"]},
        headers=bearer(session["token"]),
    )
    assert r.status_code == 201, r.text
    events = ward.get(f"/infusions/{infusion}/events")
    reported = [e for e in events if e["type"] == "reaction"]
    assert [e["actor"] for e in reported] == ["nina.k"]  # the person, not a ward's token
    # her role is the account's: a clinician's action is 403 for her
    r = client.post(
        "/api/v1/patients", json={"mrn": "MRN-9", "weight_kg": 70}, headers=bearer(session["token"])
    )
    assert r.status_code == 403


def test_a_wrong_password_an_unknown_name_and_a_machine_are_refused_alike(
    client: TestClient, book: AccountBook
) -> None:
    book.add("nina.k", "nurse", hash_password(PASSWORD))
    book.add("dashboard", "viewer", None)
    seen(client)
    for name, password in [  # (three: a fourth from this address would wait, below)
        ("nina.k", "not her pass phrase"),
        ("nobody", PASSWORD),
        ("dashboard", PASSWORD),
    ]:
        r = client.post("/api/v1/session", json={"name": name, "password": password})
        assert (r.status_code, r.json()) == (401, {"detail": REFUSED}), name
        assert password not in r.text


def test_failures_of_a_name_slow_down_then_429_with_retry_after_and_nothing_checked(
    client: TestClient, book: AccountBook
) -> None:
    book.add("nina.k", "nurse", hash_password(PASSWORD))
    seen(client)
    checks = directory(client).checks
    for _ in range(3):  # FREE_FAILURES
        assert sign_in(client, "nina.k", "wrong pass phrase")[0] == 401
    done = checks.checked
    status, said = sign_in(client, "nina.k")  # even the right password, too early
    assert status == 429
    assert said["retry-after"] == "1"
    assert said["detail"] == "too many failed sign-ins: try again in 1 s"
    assert checks.checked == done  # refused before any password check


def test_failures_from_one_address_throttle_every_name_it_tries(
    client: TestClient, book: AccountBook
) -> None:
    """A guesser who changes the name each time is held by its address (TestClient's)."""
    book.add("nina.k", "nurse", hash_password(PASSWORD))
    seen(client)
    for name in ("anna", "bert", "cleo"):
        assert sign_in(client, name, "guess number one")[0] == 401
    status, said = sign_in(client, "nina.k")
    assert (status, said["retry-after"]) == (429, "1")


def test_ten_failures_lock_a_name_for_15_minutes(book: AccountBook, tmp_path: Path) -> None:
    """The lock, on the directory with a clock the test moves (the waits between failures
    would otherwise take 1 + 2 + ... + 64 s)."""
    now = [1000.0]
    app = create_app(app_settings(tmp_path))
    with TestClient(app, base_url="http://gateway") as client:
        found = directory(client)
        for throttle in (found.names, found.addresses):
            throttle._clock = lambda: now[0]
        book.add("nina.k", "nurse", hash_password(PASSWORD))
        seen(client)
        for _ in range(10):
            assert sign_in(client, "nina.k", "wrong pass phrase")[0] == 401
            now[0] += 70.0  # past every wait before the lock (64 s at most)
        now[0] -= 70.0
        status, said = sign_in(client, "nina.k")
        assert (status, said["retry-after"]) == (429, str(15 * 60))
        now[0] += 15 * 60 + 1  # the window after the last failure is over
        assert sign_in(client, "nina.k")[0] == 201
    rows = account_rows(tmp_path, 14)  # added, 10 refused, 2 locks, the sign-in
    locks = [(r.actor, r.data) for r in rows if r.type == "sign_in_locked"]
    address = {"address": "testclient"}
    assert locks == [
        ("nina.k", {**address, "locked": "name"}),
        (None, {**address, "locked": "address"}),
    ]


def test_sign_ins_sign_outs_and_refusals_are_audited_by_the_account_never_the_name_typed(
    client: TestClient, book: AccountBook, tmp_path: Path
) -> None:
    book.add("nina.k", "nurse", hash_password(PASSWORD))
    seen(client)
    token = sign_in(client, "Nina.K")[1]["token"]
    assert client.delete("/api/v1/session", headers=bearer(token)).status_code == 204
    assert sign_in(client, "nina.k", "not her pass phrase")[0] == 401
    assert sign_in(client, "someone.unknown", PASSWORD)[0] == 401
    rows = account_rows(tmp_path, 5)
    address = "testclient"  # TestClient's peer
    assert said(rows) == [
        ("account_changed", "nina.k", {"change": "added", "role": "nurse", "password": True}),
        ("signed_in", "nina.k", {"address": address, "role": "nurse"}),
        ("signed_out", "nina.k", {"address": address}),
        ("sign_in_refused", "nina.k", {"address": address, "reason": "wrong password"}),
        ("sign_in_refused", None, {"address": address, "reason": "no such account"}),
    ]
    now = datetime.fromisoformat(client.get("/api/v1/clock", headers=AUTH["viewer"]).json()["now"])
    assert [(r.at, r.rule, r.infusion_id) for r in rows[1:]] == [(now, None, None)] * 4
    text = json.dumps([r.model_dump(mode="json") for r in rows])
    for secret in ("someone", PASSWORD, "not her pass phrase", token):
        assert secret not in text
    engine = make_engine(f"sqlite:///{tmp_path / 'pumpctl.db'}")
    try:
        assert verify(engine).ok
    finally:
        engine.dispose()
    # the live events carry infusions' news, not the accounts'
    live = client.app.state.live  # type: ignore[attr-defined]
    deadline = time.monotonic() + WRITTEN_WITHIN_S
    while live.cursor < rows[-1].id and time.monotonic() < deadline:
        time.sleep(0.05)  # polling a condition with a deadline
    assert live.cursor >= rows[-1].id
    assert not [e for _id, e in live._ring if e["event"] in {k.value for k in AccountAudit}]


def test_a_sign_in_is_neither_refused_nor_delayed_by_a_degraded_store_and_its_row_waits(
    client: TestClient, book: AccountBook, tmp_path: Path
) -> None:
    """Another process holds SQLite's write lock: the store is degraded (/health 503), a
    sign-in is answered at once all the same (a nurse may have to sign in to stop a pump),
    and its row is written, in order, once the lock goes; nothing is lost."""
    book.add("nina.k", "nurse", hash_password(PASSWORD))
    seen(client)
    holder = sqlite3.connect(tmp_path / "pumpctl.db", isolation_level=None, timeout=10)
    holder.execute("BEGIN IMMEDIATE")
    try:
        deadline = time.monotonic() + WRITTEN_WITHIN_S
        while client.get("/api/v1/health").status_code != 503:
            assert time.monotonic() < deadline, "the store never said it was degraded"
        began = time.monotonic()
        status, session = sign_in(client, "nina.k")
        took_s = time.monotonic() - began
        assert status == 201, session
        assert took_s < 2.0  # the check only: the store's 5 s busy wait is not in it
        me = client.get("/api/v1/me", headers=bearer(session["token"])).json()
        assert me == {"name": "nina.k", "role": "nurse"}
        health = client.get("/api/v1/health").json()
        assert health["store"] == "degraded"
        assert health["store_detail"]["records_waiting"] >= 1
    finally:
        holder.rollback()
        holder.close()
    rows = account_rows(tmp_path, 2)
    assert said(rows)[1] == ("signed_in", "nina.k", {"address": "testclient", "role": "nurse"})
    deadline = time.monotonic() + WRITTEN_WITHIN_S
    while (health := client.get("/api/v1/health").json())["store"] != "up":
        assert time.monotonic() < deadline, health
    assert health["store_detail"]["records_lost"] == 0


async def test_the_rows_that_wait_are_bounded_one_past_the_bound_lost_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store that does not answer: the accounts' rows wait, at most the trail's bound; one
    more is lost with a critical line and counted (/health's `records_lost`), never queued in
    front of the clinical records' backlog. The ones that waited are written afterwards."""
    url = f"sqlite:///{tmp_path / 'pumpctl.db'}"
    migrate.upgrade(url)
    store = Store.open(url)
    writer = StoreWriter(store)
    writer.start()
    holder = sqlite3.connect(tmp_path / "pumpctl.db", isolation_level=None, timeout=10)
    holder.execute("BEGIN IMMEDIATE")
    try:
        trail = AccountTrail(store, writer, VirtualClock(), waiting=2)
        with caplog.at_level(logging.CRITICAL, logger="pumpctl.store"):
            for _ in range(3):
                trail(AccountAudit.SIGNED_IN, actor="nina.k", address="10.0.0.7")
        assert trail.waiting == 2
        assert writer.health().dropped == 1
        assert "store: the audit row signed_in NOT RECORDED: 2 audit rows" in caplog.text
        holder.rollback()
        async with asyncio.timeout(WRITTEN_WITHIN_S):
            while trail.waiting:  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # polling a condition with a deadline
        assert [r.type for r in store.audit_since(0)] == ["signed_in", "signed_in"]
    finally:
        holder.close()
        writer.close()
        store.close()


def test_sign_out_ends_the_session_and_a_token_that_is_no_session_is_400(
    client: TestClient, book: AccountBook
) -> None:
    book.add("nina.k", "nurse", hash_password(PASSWORD))
    seen(client)
    token = sign_in(client, "nina.k")[1]["token"]
    assert client.delete("/api/v1/session", headers=bearer(token)).status_code == 204
    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 401
    assert client.delete("/api/v1/session", headers=bearer(token)).status_code == 401
    r = client.delete("/api/v1/session", headers=AUTH["nurse"])
    assert r.status_code == 400
    assert "pumpctl user revoke" in r.json()["detail"]


def test_disable_a_new_password_and_a_revoked_token_need_no_restart(
    client: TestClient, book: AccountBook
) -> None:
    book.add("nina.k", "nurse", hash_password(PASSWORD))
    book.add("dashboard", "viewer", None)
    machine = new_token()
    token_id = book.add_token("dashboard", token_digest(machine), "ward 3")
    seen(client)
    me = client.get("/api/v1/me", headers=bearer(machine)).json()
    assert me == {"name": "dashboard", "role": "viewer"}
    session = sign_in(client, "nina.k")[1]["token"]
    assert client.get("/api/v1/me", headers=bearer(session)).status_code == 200

    book.set_password("nina.k", hash_password("another pass phrase"))
    seen(client)
    assert client.get("/api/v1/me", headers=bearer(session)).status_code == 401
    assert sign_in(client, "nina.k")[0] == 401  # (the old password)
    session = sign_in(client, "nina.k", "another pass phrase")[1]["token"]

    book.set_disabled("nina.k", disabled=True)
    seen(client)
    assert client.get("/api/v1/me", headers=bearer(session)).status_code == 401
    status, said = sign_in(client, "nina.k", "another pass phrase")
    assert (status, said["detail"]) == (401, REFUSED)  # a disabled account: refused alike
    book.set_disabled("nina.k", disabled=False)
    seen(client)
    assert client.get("/api/v1/me", headers=bearer(session)).status_code == 401  # ended for good

    book.revoke_token(token_id)
    seen(client)
    assert client.get("/api/v1/me", headers=bearer(machine)).status_code == 401


def test_the_configured_tokens_still_work_beside_the_accounts(client: TestClient) -> None:
    me = client.get("/api/v1/me", headers=AUTH["nurse"]).json()
    assert me == {"name": "nina", "role": "nurse"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "nina.k"}, "password"),
        ({"password": PASSWORD}, "name"),
        ({"name": "nina.k", "password": ""}, "password"),
        ({"name": "nina.k", "password": "p" * 1025}, "password"),
        ({"name": "n" * 101, "password": PASSWORD}, "name"),
        ({"name": "nina.k", "password": PASSWORD, "role": "admin"}, "role"),
    ],
)
def test_the_sign_in_input_is_422_naming_the_field_never_echoed(
    client: TestClient, body: dict[str, str], field: str
) -> None:
    r = client.post("/api/v1/session", json=body)
    assert r.status_code == 422
    assert [e["loc"] for e in r.json()["detail"]] == [["body", field]]
    for value in body.values():
        assert not value or value not in r.text


def test_a_session_token_is_signed_and_carries_its_end(
    client: TestClient, book: AccountBook
) -> None:
    """Issue 20, "signed sessions that expire": a session's token is `<random>.<end>.<HMAC>`
    by a key of the kernel's process; one altered (its end pushed back, its signature or its
    random part changed), or signed by another process's key, is refused (401) though the
    kernel still holds the session; one past the end it carries is refused."""
    book.add("nina.k", "nurse", hash_password(PASSWORD))
    seen(client)
    token = sign_in(client, "nina.k")[1]["token"]
    random_part, ends, signature = token.split(".")
    assert len(random_part) == 43
    assert int(ends) > 0
    seal = directory(client).seal
    assert seal.opened(token) == int(ends)
    later = str(int(ends) + 3_600_000)
    other = SessionSeal()
    for forged in (
        f"{random_part}.{later}.{signature}",  # its end pushed back an hour
        f"{random_part}.{ends}.{signature[:-2]}AA",  # its signature changed
        f"{new_token()}.{ends}.{signature}",  # another random part
        other.token(int(ends)),  # another kernel's key
        f"{random_part}.{ends}",  # no signature
    ):
        assert seal.opened(forged) is None, forged
        assert client.get("/api/v1/me", headers=bearer(forged)).status_code == 401, forged
    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 200  # still good


def test_a_session_past_the_end_its_token_carries_is_refused(
    book: AccountBook, tmp_path: Path
) -> None:
    """The end a token carries is checked on the kernel's monotonic clock by itself: past it
    the token is refused even were the session table to hold the session longer."""
    now = [1000.0]
    app = create_app(app_settings(tmp_path, session_max_s=60))
    with TestClient(app, base_url="http://gateway") as client:
        found = directory(client)
        found._clock = lambda: now[0]
        book.add("nina.k", "nurse", hash_password(PASSWORD))
        seen(client)
        token = sign_in(client, "nina.k")[1]["token"]
        assert token.split(".")[1] == str(1_060_000)  # now + 60 s, in milliseconds
        digest = token_digest(token)
        found._sessions[digest] = dataclasses.replace(found._sessions[digest], ends=now[0] + 1e6)
        now[0] += 59.0
        assert client.get("/api/v1/me", headers=bearer(token)).status_code == 200
        now[0] += 1.0
        assert client.get("/api/v1/me", headers=bearer(token)).status_code == 401
        assert digest not in found._sessions  # ended, not kept
