"""Credentials: passwords hashed with Argon2id, tokens made at random and kept as SHA-256.

- Passwords (a person's, chosen by her): Argon2id through argon2-cffi, the library's default
  profile (RFC 9106's second recommendation: 3 passes, 64 MiB, 4 lanes); the PHC string it
  gives holds its own salt and parameters, so a changed profile still verifies older hashes.
  A check costs about 0.1 s of CPU: never on an event loop (the kernel runs it on a thread
  of its own, api/accounts.py).
- Tokens (a machine's, or a session's): 256 random bits (`secrets`), kept as their SHA-256.
  A token is not a password a person chose: a fast hash of it is as hard to reverse as the
  token is to guess, and a request's token is then found by one look-up.

docs/architecture.md, "Personal accounts, sessions and machine tokens".
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = [
    "ACCOUNT_NAME",
    "MAX_PASSWORD_CHARS",
    "MIN_PASSWORD_CHARS",
    "MIN_TOKEN_CHARS",
    "dummy_check",
    "hash_password",
    "new_token",
    "token_digest",
    "verify_password",
]

#: Characters a bearer token must have at least (a configured one is refused at start below
#: it; a made one has 43).
MIN_TOKEN_CHARS = 32
#: Characters of a password, at least and at most (a longer one is refused before it is
#: hashed: its hashing would be a cost the sender chooses).
MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024
#: An account's name: lowercase letters, digits and `._@-`, at most 64, starting with a
#: letter or digit (the audit's actor).
ACCOUNT_NAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")

_hasher = PasswordHasher()


@functools.cache
def _dummy() -> str:
    """A hash no password matches, checked for an unknown name so that its answer takes as
    long (made once, when first needed: not at import, which the web side also does)."""
    return _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    """The PHC string of `password` (Argon2id, a salt of its own)."""
    return _hasher.hash(password)


def verify_password(phc: str, password: str) -> bool:
    """Whether `password` is the one `phc` was made from (constant time, in the library)."""
    try:
        return _hasher.verify(phc, password)
    except (VerificationError, InvalidHashError):
        return False


def dummy_check(password: str) -> None:
    """A check as costly as a real one, for a name that has no password to check."""
    verify_password(_dummy(), password)


def new_token() -> str:
    """A new bearer token: 256 random bits, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What the service keeps of a token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
