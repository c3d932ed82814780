"""The accounts' changes in the audit trail (issue 20; pumpctl/store/accounts.py), on both
databases: each change of `AccountBook` (what `pumpctl user` writes) is an `account_changed`
row named by the account, in the change's own transaction, chained like every other row and
never holding a password, a hash or a token; and two writers at once, the kernel's (clinical
rows) and the accounts' (another connection, as the CLI is another process), never fork the
chain, because both append under the chain's one serialisation (SQLite's write lock,
PostgreSQL's advisory lock)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from store_cases import T0

from pumpctl.core.machine import AuditEvent, AuditType
from pumpctl.core.rules import Rule
from pumpctl.credentials import hash_password, new_token, token_digest
from pumpctl.store import AccountAudit, Store
from pumpctl.store.accounts import AccountBook, AccountError
from pumpctl.store.chain import verify
from pumpctl.store.engine import make_engine

PASSWORD = "a long enough pass phrase"  # noqa: S105 - the tests' account
#: The CLI's wall clock: far after the clinical rows of the tests (T0).
WALL = datetime(2026, 9, 1, 12, 0, tzinfo=UTC)


def rows(store: Store) -> list[tuple[object, ...]]:
    with store.engine.connect() as connection:
        query = text("SELECT type, actor, rule, infusion_id, data FROM audit ORDER BY id")
        return [
            (t, a, r, i, d if isinstance(d, dict) else json.loads(d))
            for t, a, r, i, d in connection.execute(query)
        ]


def test_each_change_is_one_row_named_by_the_account_with_nothing_secret(store: Store) -> None:
    book = AccountBook(store.engine, wall_clock=lambda: WALL, by="pumpctl user (root)")
    phc = hash_password(PASSWORD)
    book.add("nina.k", "nurse", phc)
    book.add("dashboard", "viewer", None)
    machine = new_token()
    token_id = book.add_token("dashboard", token_digest(machine), "ward 3")
    book.set_password("nina.k", hash_password("another pass phrase"))
    book.set_disabled("nina.k", disabled=True)
    book.set_disabled("nina.k", disabled=False)
    assert book.revoke_token(token_id) == "dashboard"
    assert book.revoke_token(token_id) == "dashboard"  # already revoked: no change, no row
    by = {"by": "pumpctl user (root)"}
    assert rows(store) == [
        (
            "account_changed",
            "nina.k",
            None,
            None,
            {"change": "added", "role": "nurse", "password": True, **by},
        ),
        (
            "account_changed",
            "dashboard",
            None,
            None,
            {"change": "added", "role": "viewer", "password": False, **by},
        ),
        (
            "account_changed",
            "dashboard",
            None,
            None,
            {"change": "token_made", "token_id": token_id, "label": "ward 3", **by},
        ),
        ("account_changed", "nina.k", None, None, {"change": "password", **by}),
        ("account_changed", "nina.k", None, None, {"change": "disabled", **by}),
        ("account_changed", "nina.k", None, None, {"change": "enabled", **by}),
        (
            "account_changed",
            "dashboard",
            None,
            None,
            {"change": "token_revoked", "token_id": token_id, **by},
        ),
    ]
    said = json.dumps(rows(store))
    for secret in (PASSWORD, "another pass phrase", phc, machine, token_digest(machine)):
        assert secret not in said
    (row,) = store.audit_since(0, limit=1)
    assert (row.at, row.wall_at) == (WALL, WALL)  # the CLI's wall clock: it has no other
    assert verify(store.engine).ok


def test_a_change_refused_writes_no_row(store: Store) -> None:
    book = AccountBook(store.engine)
    book.add("nina.k", "nurse", None)
    for refused in (
        lambda: book.add("nina.k", "viewer", None),
        lambda: book.set_disabled("nobody", disabled=True),
        lambda: book.revoke_token(7),
    ):
        try:
            refused()
        except AccountError:
            pass
        else:  # pragma: no cover - the assertion below says what went wrong
            raise AssertionError("not refused")
    assert [r[0] for r in rows(store)] == ["account_changed"]
    assert verify(store.engine).ok


def test_the_clis_wall_clock_never_moves_clinical_time(store: Store) -> None:
    """A restarted virtual clock goes on from the trail's last clinical instant: a CLI row's
    `at`, its wall clock, is not one."""
    store.append_audit([AuditEvent(type=AuditType.STOPPED, rule=Rule.A6, at=T0)], actor="nina")
    AccountBook(store.engine, wall_clock=lambda: WALL).add("nina.k", "nurse", None)
    later = T0 + timedelta(minutes=1)
    store.record_account(AccountAudit.SIGNED_IN, actor="nina.k", at=later, address="10.0.0.7")
    assert store.latest_clinical_time() == later


def test_the_kernel_and_the_accounts_writing_at_once_never_fork_the_chain(
    store: Store, database_url: str
) -> None:
    """The kernel's writer (this store) appends clinical rows while another engine, as
    `pumpctl user` in its own process, adds accounts and tokens; each round both begin at
    the same instant: every row follows the one before it."""
    other = make_engine(database_url)
    book = AccountBook(other, by="pumpctl user (root)")
    errors: list[BaseException] = []
    rounds = 30
    go = threading.Barrier(2)

    def kernel() -> None:
        try:
            for n in range(rounds):
                event = AuditEvent(
                    type=AuditType.RATE_STEP, rule=Rule.L1, at=T0 + timedelta(seconds=n)
                )
                go.wait(10)
                store.append_audit([event, event], actor="nina")
        except BaseException as error:  # noqa: BLE001 - said by the assertion below
            errors.append(error)
            go.abort()

    def accounts() -> None:
        try:
            for n in range(rounds):
                go.wait(10)
                book.add(f"nurse-{n}", "nurse", None)
        except BaseException as error:  # noqa: BLE001 - said by the assertion below
            errors.append(error)
            go.abort()

    try:
        threads = [threading.Thread(target=kernel), threading.Thread(target=accounts)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not any(t.is_alive() for t in threads)
    finally:
        other.dispose()
    assert errors == []
    types = [r[0] for r in rows(store)]
    assert (types.count("rate_step"), types.count("account_changed")) == (2 * rounds, rounds)
    checked = verify(store.engine)
    assert checked.ok, checked.broken
    assert checked.checked == 3 * rounds
