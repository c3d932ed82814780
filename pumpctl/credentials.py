"""Credentials: passwords hashed with Argon2id, tokens made at random and kept as SHA-256.

- Passwords (a person's, chosen by her): Argon2id through argon2-cffi, the library's default
  profile (RFC 9106's second recommendation: 3 passes, 64 MiB, 4 lanes); the PHC string it
  gives holds its own salt and parameters, so a changed profile still verifies older hashes.
  A check costs about 0.1 s of CPU: never on an event loop (the kernel runs it on a thread
  of its own, api/accounts.py).
- Tokens (a machine's, or a session's): 256 random bits (`secrets`), kept as their SHA-256.
  A token is not a password a person chose: a fast hash of it is as hard to reverse as the
  token is to guess, and a request's token is then found by one look-up.
- A session's token is also signed (`SessionSeal`, HMAC-SHA256 with a key of the kernel's
  process, RFC 2104 through Python's `hmac`): `<256 random bits>.<its end>.<signature>`. The
  end it carries cannot be moved by its holder, a token the kernel did not make is refused
  by its signature, and the session table still ends a session at sign-out or disable.

docs/architecture.md, "Personal accounts, sessions and machine tokens".
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = [
    "ACCOUNT_NAME",
    "MAX_PASSWORD_CHARS",
    "MIN_PASSWORD_CHARS",
    "MIN_TOKEN_CHARS",
    "SessionSeal",
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


class SessionSeal:
    """Signs session tokens with a key of this process (made at random when none is given):
    the kernel's sessions live in its memory and end when it restarts, and so does the key,
    so there is none to keep, rotate or leak. A token is `<random>.<end>.<signature>`, the end
    in milliseconds of the kernel's monotonic clock (a wall clock stepped by NTP moves no
    session's end, A7); the signature is HMAC-SHA256 over the first two parts."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else secrets.token_bytes(32)

    def token(self, ends_ms: int) -> str:
        """A new session token ending at `ends_ms`."""
        body = f"{new_token()}.{ends_ms}"
        return f"{body}.{self._signature(body)}"

    def opened(self, token: str) -> int | None:
        """The end a token made here carries, or None when it is not one (forged, altered,
        another process's, or no session's token at all); compared in constant time."""
        body, dot, signature = token.rpartition(".")
        random_part, dot2, ends = body.partition(".")
        if not (dot and dot2 and random_part and ends.isascii() and ends.isdigit()):
            return None
        if not hmac.compare_digest(self._signature(body), signature):
            return None
        return int(ends)

    def _signature(self, body: str) -> str:
        digest = hmac.new(self._key, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
