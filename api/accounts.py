"""The kernel's accounts: who a token is, sign-in and sign-out (issue 20).

docs/architecture.md, "Personal accounts, sessions and machine tokens":

- `AccountDirectory` holds a snapshot of the store's accounts and machines' tokens, read on
  the store's reader threads at start and every `ACCOUNTS_REFRESH_S` (a read that fails keeps
  the last snapshot: a degraded store never signs anybody out), and the sessions, in memory
  only (`session_max_s`, at most `MAX_SESSIONS`).
- `identify(token)`: a session's or a machine token's user, or None; one dictionary look-up
  of the token's SHA-256, on the loop.
- `sign_in`: the throttle first (api/throttle.py: a name or an address that failed too often
  is refused without a check), then the password checked by `PasswordChecks`, one thread of
  its own, never the loop, at most `CHECKS_AT_ONCE` at once (more: `Busy`, at once).
- `verify(name, password)` is the one seam a directory (LDAP, OIDC) would replace.
- `AccountTrail`: the audit rows of sign-ins, sign-outs, refusals after a check and lock-outs,
  each queued as a record of the store's writer and never awaited (a sign-in is never refused
  or delayed by a degraded store), at most `TRAIL_WAITING` waiting.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from api.auth import User
from api.throttle import WINDOW_S, Throttle
from pumpctl.clock import Clock
from pumpctl.credentials import SessionSeal, dummy_check, token_digest, verify_password
from pumpctl.settings import Role
from pumpctl.store import AccountAudit, Store
from pumpctl.store.accounts import AccountBook, AccountRow, Snapshot
from pumpctl.store.writer import StoreReader, StoreUnavailable, StoreWriter

__all__ = [
    "ACCOUNTS_REFRESH_S",
    "CHECKS_AT_ONCE",
    "MAX_SESSIONS",
    "TRAIL_WAITING",
    "AccountDirectory",
    "AccountTrail",
    "Busy",
    "PasswordChecks",
    "SignedIn",
    "Throttled",
]

_log = logging.getLogger("pumpctl.accounts")

#: Seconds between two reads of the accounts (a change is seen within them, no restart).
ACCOUNTS_REFRESH_S = 2.0
#: Password checks at the kernel at once (one running, the others waiting for the thread).
CHECKS_AT_ONCE = 8
#: Sessions held at most (beyond, the oldest ends).
MAX_SESSIONS = 10_000
#: The accounts' audit rows that may wait for the store at once (one more is lost, loudly and
#: counted): sign-ins never fill the backlog the clinical records wait in.
TRAIL_WAITING = 1_000


class Busy(Exception):  # noqa: N818 - a state, answered 503
    """`CHECKS_AT_ONCE` sign-ins already wait for their check."""


class Throttled(Exception):  # noqa: N818 - a refusal, answered 429
    """Too many failed sign-ins for the name or the address: `wait_s` to wait."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(f"too many failed sign-ins: try again in {wait_s:.0f} s")
        self.wait_s = wait_s


class PasswordChecks:
    """Argon2 checks on one thread of their own, at most `at_once` at a time in all."""

    def __init__(self, *, at_once: int = CHECKS_AT_ONCE) -> None:
        self.at_once = at_once
        self.in_flight = 0
        self.checked = 0  # checks done (the tests count them)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="password check"
        )

    async def __call__(self, check: Callable[[], bool]) -> bool:
        """`check()` on the thread; `Busy` at once when `at_once` are already there."""
        if self.in_flight >= self.at_once:
            raise Busy(f"{self.in_flight} sign-ins already wait for their check")
        self.in_flight += 1
        try:
            # not cancelled with its request: a check begun ends (its thread is the bound)
            return await asyncio.shield(asyncio.wrap_future(self._pool.submit(check)))
        finally:
            self.in_flight -= 1
            self.checked += 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class AccountTrail:
    """The kernel's audit rows of the accounts (`AccountAudit`), at clinical time. Each is a
    record of the store's writer (queued, written in order on its thread, waiting in memory
    and tried again while the store is degraded, as a decision's record does) and is never
    awaited: the sign-in it tells of goes on whatever the store does. At most `waiting` of
    them wait at once; one more is lost with a critical line and counted on /health
    (`records_lost`), as a record past the writer's backlog is."""

    def __init__(
        self, store: Store, writer: StoreWriter, clock: Clock, *, waiting: int = TRAIL_WAITING
    ) -> None:
        self.store = store
        self.writer = writer
        self.clock = clock
        self.limit = waiting
        self.waiting = 0  # queued and not yet written (or lost)

    def __call__(self, kind: AccountAudit, *, actor: str | None, **data: object) -> None:
        """Queue one row (`actor`: the account's name, or None; `data`: never a password, a
        token or a name that is no account)."""
        what = f"the audit row {kind.value}"
        if self.waiting >= self.limit:
            why = f"{self.waiting} audit rows of the accounts already wait for the database"
            self.writer.lost(what, why)
            return
        at = self.clock.now()
        self.waiting += 1
        written = self.writer.record(
            lambda: self.store.record_account(kind, actor=actor, at=at, **data), what=what
        )
        written.add_done_callback(self._written)

    def _written(self, _done: asyncio.Future[bool]) -> None:
        self.waiting -= 1


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A new session: its token (given once), whose it is, and when it ends (UTC)."""

    token: str
    user: User
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class _Session:
    account_id: int
    stamp: datetime  # the account's changed_at when it signed in
    ends: float  # monotonic


def _wall_now() -> datetime:
    return datetime.now(UTC)


class AccountDirectory:
    """The accounts the kernel knows, its sessions, and sign-in."""

    def __init__(
        self,
        book: AccountBook,
        reader: StoreReader,
        *,
        session_max_s: float,
        checks: PasswordChecks | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = _wall_now,
    ) -> None:
        self.book = book
        self.reader = reader
        self.session_max_s = session_max_s
        self.checks = checks or PasswordChecks()
        self.names = Throttle(clock=clock)
        self.addresses = Throttle(clock=clock)
        self._clock = clock
        self._wall = wall_clock
        self._snapshot = Snapshot({}, {})
        self._by_name: dict[str, AccountRow] = {}
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self.seal = SessionSeal()  # signs this kernel's session tokens (credentials.py)
        self._failing = False
        #: where the sign-ins are audited (set by the kernel once its clock is final)
        self.trail: AccountTrail | None = None

    def _audit(self, kind: AccountAudit, *, actor: str | None, **data: object) -> None:
        if self.trail is not None:
            self.trail(kind, actor=actor, **data)

    # -- the snapshot -----------------------------------------------------------------------

    async def refresh(self) -> bool:
        """Read the accounts again (on a reader thread); False, the last kept, when it fails."""
        try:
            snapshot = await self.reader(self.book.snapshot, what="the accounts' read")
        except StoreUnavailable as error:
            if not self._failing:
                _log.warning("accounts: kept as last read (%s)", error)
            self._failing = True
            return False
        if self._failing:
            _log.warning("accounts: read again")
        self._failing = False
        self._snapshot = snapshot
        self._by_name = {a.name: a for a in snapshot.accounts.values()}
        self._sweep()
        return True

    async def run(self, every_s: float = ACCOUNTS_REFRESH_S) -> None:
        """Until cancelled: the accounts read again every `every_s`."""
        while True:
            await asyncio.sleep(every_s)
            await self.refresh()

    def _sweep(self) -> None:
        now = self._clock()
        for digest, session in list(self._sessions.items()):
            if self._account_of(session, now) is None:
                del self._sessions[digest]

    def _account_of(self, session: _Session, now: float) -> AccountRow | None:
        account = self._snapshot.accounts.get(session.account_id)
        if (
            account is None
            or account.disabled
            or account.changed_at != session.stamp
            or now >= session.ends
        ):
            return None
        return account

    # -- who a token is ---------------------------------------------------------------------

    def identify(self, token: str) -> User | None:
        """The user of a session's or a machine's token, or None (unknown, ended, revoked,
        its account disabled)."""
        digest = token_digest(token)
        ends_ms = self.seal.opened(token)
        if ends_ms is not None:  # signed here: a session's token, held or ended
            now = self._clock()
            session = self._sessions.get(digest)
            account = None if session is None else self._account_of(session, now)
            if account is None or now * 1000 >= ends_ms:
                self._sessions.pop(digest, None)
                return None
            return User(account.name, Role(account.role))
        account_id = self._snapshot.tokens.get(digest)
        if account_id is None:
            return None
        found = self._snapshot.accounts.get(account_id)
        if found is None or found.disabled:
            return None
        return User(found.name, Role(found.role))

    def is_session(self, token: str) -> bool:
        """Whether `token` is a session's (live or not)."""
        return token_digest(token) in self._sessions

    def sign_out(self, token: str, address: str = "") -> bool:
        """End the session of `token` (audited, from `address`); False when it is none."""
        session = self._sessions.pop(token_digest(token), None)
        if session is None:
            return False
        account = self._snapshot.accounts.get(session.account_id)
        name = account.name if account is not None else None
        self._audit(AccountAudit.SIGNED_OUT, actor=name, address=address)
        return True

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    # -- sign-in ----------------------------------------------------------------------------

    async def verify(self, name: str, password: str) -> AccountRow | None:
        """The account whose name and password these are, or None; the check on the checks'
        thread, as costly for an unknown name (the seam a directory would replace)."""
        account = self._by_name.get(name)
        phc = None if account is None or account.disabled else account.password_hash
        if phc is None:

            def as_costly() -> bool:
                dummy_check(password)
                return False

            await self.checks(as_costly)
            return None
        ok = await self.checks(lambda: verify_password(phc, password))
        return account if ok else None

    async def sign_in(self, name: str, password: str, address: str) -> SignedIn | None:
        """A session for `name` and `password` from `address`, or None (refused alike for an
        unknown name, a wrong password, a disabled account, a machine's). `Throttled` before
        any check when the name or the address failed too often; `Busy` when the checks are
        full."""
        key = name.strip().lower()
        wait_s = max(self.names.wait_s(key), self.addresses.wait_s(address))
        if wait_s > 0:
            raise Throttled(wait_s)
        account = await self.verify(key, password)
        if account is None:
            self._failed(key, address)
            return None
        self.names.succeeded(key)
        self._audit(AccountAudit.SIGNED_IN, actor=account.name, address=address, role=account.role)
        ends = self._clock() + self.session_max_s
        token = self.seal.token(int(ends * 1000))
        self._sessions[token_digest(token)] = _Session(account.id, account.changed_at, ends)
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        expires_at = self._wall() + timedelta(seconds=self.session_max_s)
        return SignedIn(token, User(account.name, Role(account.role)), expires_at)

    def _failed(self, key: str, address: str) -> None:
        """A sign-in refused after its check: counted, audited (the account's name, or none
        for a name that is no account: the name typed is never kept), and a lock it makes
        logged and audited."""
        self.names.failed(key)
        self.addresses.failed(address)
        known = self._by_name.get(key)
        actor = known.name if known is not None else None
        self._audit(AccountAudit.SIGN_IN_REFUSED, actor=actor, address=address, reason=_why(known))
        minutes = WINDOW_S / 60
        if self.names.locked(key):
            who = f"account {known.id}" if known is not None else "a name that is no account"
            _log.warning("sign-in: %s locked for %.0f min after repeated failures", who, minutes)
            self._audit(AccountAudit.SIGN_IN_LOCKED, actor=actor, address=address, locked="name")
        if self.addresses.locked(address):
            _log.warning(
                "sign-in: address %s locked for %.0f min after repeated failures", address, minutes
            )
            self._audit(AccountAudit.SIGN_IN_LOCKED, actor=None, address=address, locked="address")


def _why(account: AccountRow | None) -> str:
    """Why a checked sign-in was refused, for its audit row (the answer says none of it)."""
    if account is None:
        return "no such account"
    if account.disabled:
        return "account disabled"
    if account.password_hash is None:
        return "a machine's account (tokens only)"
    return "wrong password"
