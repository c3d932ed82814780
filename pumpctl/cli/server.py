"""uvicorn's server as both processes run it: the kernel (pumpctl/cli/serve.py) and the web
side (pumpctl/cli/webside.py)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Generator

import uvicorn

__all__ = ["Server"]


class Server(uvicorn.Server):
    """uvicorn's server whose failed startup (a port taken, an application that does not
    start) ends `serve()` instead of raising SystemExit out of the event loop: the caller says
    why, in one line."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        except SystemExit:
            self.should_exit = True

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """uvicorn's, except that the SIGTERM or SIGINT it caught is not raised again once it
        has shut down: that ended the process there, before the kernel stopped its web side,
        removed its socket and wrote out its queued log lines (pumpctl/cli/logsetup.py; the
        audit chain's head "at stop" among them, lost on a loaded machine). Both processes end
        in order and exit 0."""
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()  # read by uvicorn's own exit, right after this
