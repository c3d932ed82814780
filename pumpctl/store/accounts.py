"""Accounts and machines' tokens in the store (tables `account`, `api_token`, migration 0004).

`pumpctl user` writes them (`AccountBook`, on the database `pumpctl serve` opens); the kernel
only reads them, as one snapshot (`AccountBook.snapshot`, on the store's reader threads) every
few seconds (api/accounts.py). Passwords arrive here already hashed and tokens as their
digests (pumpctl/credentials.py): nothing here sees a password or a token.

Every change is audited (`account_changed`, actor the account's name) in the transaction
that makes it, through the store's one place audit rows are inserted (`Store.audit_account`):
a write transaction ordered with the kernel's writer (SQLite's write lock, PostgreSQL's
advisory lock of the chain), so the hash chain never forks while both write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from pumpctl.store.errors import StoreError
from pumpctl.store.models import Account, ApiToken
from pumpctl.store.store import AccountAudit, Store

__all__ = ["AccountBook", "AccountError", "AccountRow", "Snapshot", "TokenRow"]


class AccountError(StoreError):
    """An account operation refused: an unknown name or token, a name taken (one line)."""


@dataclass(frozen=True, slots=True)
class AccountRow:
    """An account as the kernel holds it."""

    id: int
    name: str
    role: str
    password_hash: str | None
    disabled: bool
    changed_at: datetime


@dataclass(frozen=True, slots=True)
class TokenRow:
    """A machine's token, as `pumpctl user list` shows it (never its digest)."""

    id: int
    account: str
    label: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every account by id, and every token not revoked: its digest -> its account's id."""

    accounts: dict[int, AccountRow]
    tokens: dict[str, int]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _row(account: Account) -> AccountRow:
    assert account.id is not None
    return AccountRow(
        account.id,
        account.name,
        account.role,
        account.password_hash,
        account.disabled,
        account.changed_at,
    )


class AccountBook:
    """The accounts of the database behind `engine`; `by` (who changes them: `pumpctl user`
    and the system user running it) is in each change's audit row."""

    def __init__(
        self,
        engine: Engine,
        *,
        wall_clock: Callable[[], datetime] = _utc_now,
        by: str | None = None,
    ) -> None:
        self.engine = engine
        self._now = wall_clock
        self._store = Store(engine, wall_clock=wall_clock)
        self._by = by

    def _changed(self, session: Session, name: str, at: datetime, **data: object) -> None:
        """The audit row of a change of the account `name`, in the change's transaction."""
        if self._by is not None:
            data["by"] = self._by
        self._store.audit_account(session, AccountAudit.ACCOUNT_CHANGED, actor=name, at=at, **data)

    def _find(self, session: Session, name: str) -> Account:
        account = session.exec(select(Account).where(Account.name == name)).first()
        if account is None:
            raise AccountError(f"no account named {name!r}")
        return account

    def add(self, name: str, role: str, password_hash: str | None) -> AccountRow:
        """A new account; `AccountError` when the name is taken."""
        now = self._now()
        account = Account(
            name=name,
            role=role,
            password_hash=password_hash,
            created_at=now,
            changed_at=now,
        )
        try:
            with self._store.transaction() as session:
                session.add(account)
                session.flush()
                self._changed(
                    session,
                    name,
                    now,
                    change="added",
                    role=role,
                    password=password_hash is not None,
                )
        except IntegrityError:
            raise AccountError(f"the name {name!r} is taken") from None
        return _row(account)

    def set_password(self, name: str, password_hash: str) -> None:
        """A new password (the account's sessions end: `changed_at` moves)."""
        with self._store.transaction() as session:
            account = self._find(session, name)
            account.password_hash = password_hash
            account.changed_at = now = self._now()
            self._changed(session, name, now, change="password")

    def set_disabled(self, name: str, *, disabled: bool) -> None:
        """Disable (or enable again) an account: its sessions and tokens refused while it is."""
        with self._store.transaction() as session:
            account = self._find(session, name)
            account.disabled = disabled
            account.changed_at = now = self._now()
            self._changed(session, name, now, change="disabled" if disabled else "enabled")

    def add_token(self, name: str, digest: str, label: str) -> int:
        """A token (its digest) for the account `name`; its id."""
        with self._store.transaction() as session:
            account = self._find(session, name)
            assert account.id is not None
            now = self._now()
            token = ApiToken(account_id=account.id, label=label, digest=digest, created_at=now)
            session.add(token)
            session.flush()
            assert token.id is not None
            self._changed(session, name, now, change="token_made", token_id=token.id, label=label)
        return token.id

    def revoke_token(self, token_id: int) -> str:
        """Revoke the token `token_id` (once: audited then); the name of its account."""
        with self._store.transaction() as session:
            token = session.get(ApiToken, token_id)
            if token is None:
                raise AccountError(f"no token {token_id}")
            account = session.get(Account, token.account_id)
            assert account is not None
            if token.revoked_at is None:
                token.revoked_at = now = self._now()
                self._changed(session, account.name, now, change="token_revoked", token_id=token_id)
            return account.name

    def accounts(self) -> list[AccountRow]:
        """Every account, by name."""
        with Session(self.engine) as session:
            rows = session.exec(select(Account).order_by(col(Account.name))).all()
            return [_row(a) for a in rows]

    def tokens(self) -> list[TokenRow]:
        """Every token (revoked ones too), by account and id."""
        with Session(self.engine) as session:
            found = session.exec(
                select(ApiToken, Account)
                .where(ApiToken.account_id == Account.id)
                .order_by(col(Account.name), col(ApiToken.id))
            ).all()
            return [
                TokenRow(t.id or 0, a.name, t.label, t.created_at, t.revoked_at) for t, a in found
            ]

    def snapshot(self) -> Snapshot:
        """Every account, and every token not revoked (one short read: the kernel's)."""
        with Session(self.engine) as session, session.begin():
            accounts = {a.id: _row(a) for a in session.exec(select(Account)).all() if a.id}
            tokens = {
                t.digest: t.account_id
                for t in session.exec(
                    select(ApiToken).where(col(ApiToken.revoked_at).is_(None))
                ).all()
            }
        return Snapshot(accounts, tokens)
