"""Turns per key (a client address): at most `size` holders of one key at once, each wait
bounded (issue 18: one address's flood waits behind its own few requests, not every other
address's, and never without end).

One helper for the web side's three such limits: the requests one address has worked on at
once (`api.edge.PeerTurns`), its requests at the kernel (`api.web.Kernel.send`), and its tokens
never seen good asked one at a time (`api.web.Identities`). A key's turns are forgotten when
nobody holds or waits for them, so a flood of addresses leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable

__all__ = ["KeyedTurns", "NoTurn"]


class NoTurn(Exception):  # noqa: N818 - a refusal, said by the caller
    """No turn of the key came within the wait (never raised by the block itself); `turns`
    names whose turns they were, so a caller wrapping other code tells its own apart."""

    def __init__(self, turns: KeyedTurns, key: str) -> None:
        super().__init__(key)
        self.turns = turns


class KeyedTurns:
    """At most `size` turns per key held at once; a wait for one longer than `wait_s` is
    `NoTurn` (the caller says what that means to its client)."""

    def __init__(self, size: int, wait_s: float) -> None:
        self.size = size
        self.wait_s = wait_s
        self._turns: dict[str, asyncio.Semaphore] = {}
        self._users: Counter[str] = Counter()

    def __len__(self) -> int:
        """Keys with a turn held or awaited (what the flood costs in memory)."""
        return len(self._turns)

    @contextlib.asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[Callable[[], None]]:
        """A turn of `key` for the block; the block may end it early with the callable it is
        given (a request whose answer has started), which is then a no-op at the block's end."""
        turn = self._turns.setdefault(key, asyncio.Semaphore(self.size))
        self._users[key] += 1
        try:
            try:
                async with asyncio.timeout(self.wait_s):
                    await turn.acquire()
            except TimeoutError:
                raise NoTurn(self, key) from None
            held = True

            def release() -> None:
                nonlocal held
                if held:
                    held = False
                    turn.release()

            try:
                yield release
            finally:
                release()
        finally:
            self._users[key] -= 1
            if self._users[key] <= 0:
                del self._users[key]
                del self._turns[key]
