"""Bearer tokens and roles (interfaces.md, section 3): who is asking, and may they.

`identify` is the one function that turns a presented token into a user: the configured
tokens first, then the accounts' sessions and machine tokens (api/accounts.py).

Tokens are compared in constant time (`hmac.compare_digest`) against every configured token,
so the time an answer takes says nothing about how much of a token was right.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from pumpctl.settings import Role, TokenEntry

__all__ = ["CLINICAL", "NURSE_UP", "Directory", "User", "authenticate", "identify"]

#: Who may read clinical data (every GET of patients, infusions, events): admin holds only its
#: own rows (pumps and the simulation), no clinical data.
CLINICAL = frozenset({Role.VIEWER, Role.NURSE, Role.CLINICIAN})
#: Who may do what a nurse may (a clinician's row includes the nurse's).
NURSE_UP = frozenset({Role.NURSE, Role.CLINICIAN})


@dataclass(frozen=True, slots=True)
class User:
    """The holder of a valid token."""

    name: str
    role: Role


class Directory(Protocol):
    """The accounts' tokens (the kernel's `api.accounts.AccountDirectory`)."""

    def identify(self, token: str) -> User | None:
        """The user of a session's or a machine's token, or None."""
        ...


def identify(
    tokens: Mapping[str, TokenEntry], directory: Directory | None, presented: str
) -> User | None:
    """The one place a presented bearer token becomes a user: a configured token (constant
    time), else a session's or a machine's token of the accounts (`directory`; None: the
    configured tokens only). Reads memory only: it may run before a body is read."""
    user = authenticate(tokens, presented)
    if user is None and directory is not None:
        user = directory.identify(presented)
    return user


def authenticate(tokens: Mapping[str, TokenEntry], presented: str) -> User | None:
    """The user of `presented`, or None; every configured token is compared, in constant time."""
    found: TokenEntry | None = None
    given = presented.encode()
    for token, entry in tokens.items():
        if hmac.compare_digest(token.encode(), given):
            found = entry
    return None if found is None else User(found.name, found.role)
