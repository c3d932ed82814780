"""Accounts and machines' tokens in the store (tables `account`, `api_token`, migration 0004).

`pumpctl user` writes them (`AccountBook`, on the database `pumpctl serve` opens); the kernel
only reads them, as one snapshot (`AccountBook.snapshot`, on the store's reader threads) every
few seconds (api/accounts.py). Passwords arrive here already hashed and tokens as their
digests (pumpctl/credentials.py): nothing here sees a password or a token.
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
    """The accounts of the database behind `engine`."""

    def __init__(self, engine: Engine, *, wall_clock: Callable[[], datetime] = _utc_now) -> None:
        self.engine = engine
        self._now = wall_clock

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
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                session.add(account)
        except IntegrityError:
            raise AccountError(f"the name {name!r} is taken") from None
        return _row(account)

    def set_password(self, name: str, password_hash: str) -> None:
        """A new password (the account's sessions end: `changed_at` moves)."""
        with Session(self.engine) as session, session.begin():
            account = self._find(session, name)
            account.password_hash = password_hash
            account.changed_at = self._now()

    def set_disabled(self, name: str, *, disabled: bool) -> None:
        """Disable (or enable again) an account: its sessions and tokens refused while it is."""
        with Session(self.engine) as session, session.begin():
            account = self._find(session, name)
            account.disabled = disabled
            account.changed_at = self._now()

    def add_token(self, name: str, digest: str, label: str) -> int:
        """A token (its digest) for the account `name`; its id."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            account = self._find(session, name)
            assert account.id is not None
            token = ApiToken(
                account_id=account.id, label=label, digest=digest, created_at=self._now()
            )
            session.add(token)
        assert token.id is not None
        return token.id

    def revoke_token(self, token_id: int) -> str:
        """Revoke the token `token_id` (once); the name of its account."""
        with Session(self.engine) as session, session.begin():
            token = session.get(ApiToken, token_id)
            if token is None:
                raise AccountError(f"no token {token_id}")
            if token.revoked_at is None:
                token.revoked_at = self._now()
            account = session.get(Account, token.account_id)
            assert account is not None
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
