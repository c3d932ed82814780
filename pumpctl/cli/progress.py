"""Progress on the command line's long waits (rich): a spinner on a terminal, then how long it
took. Off a terminal (a log, CI, the journal) it prints nothing: an error stays one line and the
service's own log says when it is up."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

__all__ = ["waiting"]


@contextmanager
def waiting(message: str) -> Iterator[None]:
    """Show that `message` is under way until the block ends; say how long it took."""
    console = Console(stderr=True, highlight=False)
    started = time.monotonic()
    if not console.is_terminal:
        yield
        return
    with console.status(f"{message}…"):
        yield
    console.print(f"{message}: done in {time.monotonic() - started:.1f} s")
