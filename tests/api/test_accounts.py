"""Personal accounts through the kernel's API (issue 20; interfaces.md, section 3, `POST` and
`DELETE /session`): a person signs in with her own name and password and the audit names her;
failures slow down and lock out per name and per address (429 with `Retry-After`, nothing
checked then); disable, a new password and a revoked machine token take effect without a
restart; the sign-in's input is 422 naming the field, never echoed.

The accounts are written as `pumpctl user` writes them (pumpctl/store/accounts.py) into the
app's own database; the kernel's snapshot is read again at once (`refresh`, what its 2 s loop
does) instead of waiting for the loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import AUTH, Ward
from conftest import settings as app_settings
from fastapi.testclient import TestClient

from api.accounts import AccountDirectory
from api.app import create_app
from pumpctl.credentials import hash_password, new_token, token_digest
from pumpctl.store.accounts import AccountBook
from pumpctl.store.engine import make_engine

PASSWORD = "a long enough pass phrase"  # noqa: S105 - the tests' account
REFUSED = "the name or the password is not right"


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
    ward = Ward(client)
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
